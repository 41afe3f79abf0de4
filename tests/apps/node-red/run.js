// Starts Node-RED's editor with credential login for the given users, for gaitkeeper's
// integration tests. Usage:
//   node run.js --port PORT --dir DIR --user NAME:PASSWORD [--user ...]
// Prints `ready` once the editor answers.
'use strict';
const fs = require('fs');
const path = require('path');
const http = require('http');

const args = process.argv.slice(2);
let port = 1880;
let dir = null;
const users = [];
for (let i = 0; i < args.length; i += 2) {
  const [key, value] = [args[i], args[i + 1]];
  if (key === '--port') port = Number(value);
  else if (key === '--dir') dir = value;
  else if (key === '--user') {
    const at = value.indexOf(':');
    users.push([value.slice(0, at), value.slice(at + 1)]);
  } else {
    console.error(`unknown argument ${key}`);
    process.exit(2);
  }
}
if (!dir) {
  console.error('--dir is required');
  process.exit(2);
}
const bcrypt = require('bcryptjs');
const settings = {
  uiHost: '127.0.0.1',
  uiPort: port,
  userDir: dir,
  flowFile: 'flows.json',
  credentialSecret: false,
  adminAuth: {
    type: 'credentials',
    users: users.map(([username, password]) => ({
      username,
      password: bcrypt.hashSync(password, 8),
      permissions: '*',
    })),
  },
  logging: { console: { level: 'warn' } },
  editorTheme: { tours: false },
  telemetry: { enabled: false },
  diagnostics: { enabled: false },
};
const file = path.join(dir, 'settings.js');
fs.writeFileSync(file, 'module.exports = ' + JSON.stringify(settings, null, 2) + ';\n');
process.argv = [process.argv[0], 'node-red', '--settings', file, '--userDir', dir, '--port', String(port)];
require('node-red/red.js');

const deadline = Date.now() + 60000;
(function poll() {
  http.get({ host: '127.0.0.1', port, path: '/auth/login' }, (res) => {
    res.resume();
    if (res.statusCode === 200) console.log('ready');
    else setTimeout(poll, 100);
  }).on('error', () => {
    if (Date.now() > deadline) process.exit(1);
    setTimeout(poll, 100);
  });
})();
