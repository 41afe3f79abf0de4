#!/usr/bin/env node
// A real Express login app behind which gaitkeeper's integration tests log in.
//
//   node tests/apps/express-login/app.js --port PORT --user NAME:PW [--user NAME2:PW2 ...]
//
// Listens on 127.0.0.1:PORT and prints one line `ready` once listening. Routes:
//   GET  /login    HTML login form (username, password)
//   POST /login    urlencoded (qs, extended), JSON or multipart/form-data (multer .none());
//                  gzip/deflate/br request bodies are inflated by body-parser for urlencoded
//                  and JSON (not for multipart). Credentials are compared exactly.
//                  JSON: 200 {"access_token","user"} or 401 {"error":"invalid credentials"}.
//                  Otherwise: 302 /home with cookie `sid`, or 200 with the form and an error.
//   GET  /home     the logged-in user's name (text/plain), or 302 /login
//   GET  /api/me   Authorization: Bearer <token> -> {"user": name}, or 401
//   GET  /spa      a single-page app that logs in with fetch() + JSON and a bearer token
'use strict';

const crypto = require('node:crypto');
const express = require('express');
const bodyParser = require('body-parser');
const multer = require('multer');

function parseArgs(argv) {
  const out = { port: null, users: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const val = argv[i + 1];
    if (arg === '--port' && val !== undefined) {
      out.port = Number(val);
      i++;
    } else if (arg === '--user' && val !== undefined) {
      const colon = val.indexOf(':');
      if (colon < 1) throw new Error(`--user wants NAME:PW, got ${JSON.stringify(val)}`);
      out.users.set(val.slice(0, colon), val.slice(colon + 1));
      i++;
    } else {
      throw new Error(`unknown or incomplete argument ${JSON.stringify(arg)}`);
    }
  }
  if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) {
    throw new Error('usage: app.js --port PORT --user NAME:PW [--user NAME:PW ...]');
  }
  return out;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(e.message);
  process.exit(2);
}

const sessions = new Map(); // sid -> user name
const tokens = new Map(); // bearer token -> user name

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

function cookies(req) {
  const out = {};
  for (const piece of (req.headers.cookie || '').split(';')) {
    const eq = piece.indexOf('=');
    if (eq < 0) continue;
    const k = piece.slice(0, eq).trim();
    if (!(k in out)) out[k] = piece.slice(eq + 1).trim();
  }
  return out;
}

function checkCredentials(username, password) {
  if (typeof username !== 'string' || typeof password !== 'string') return false;
  if (!opts.users.has(username)) return false;
  const want = Buffer.from(opts.users.get(username), 'utf8');
  const got = Buffer.from(password, 'utf8');
  return want.length === got.length && crypto.timingSafeEqual(want, got);
}

function loginPage(error, username) {
  const shown = username === undefined ? ''
    : (typeof username === 'string' ? username : JSON.stringify(username));
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>\n` : ''}<form method="post" action="/login">
  <label>Username <input type="text" name="username" id="username" autocomplete="username" value="${escapeHtml(shown)}"></label>
  <label>Password <input type="password" name="password" id="password" autocomplete="current-password"></label>
  <button type="submit" id="submit">Sign in</button>
</form>
</body></html>
`;
}

const SPA_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>SPA sign in</title></head>
<body>
<h1>SPA sign in</h1>
<input type="text" id="username" autocomplete="username">
<input type="password" id="password" autocomplete="current-password">
<button type="button" id="go">Sign in</button>
<p id="status"></p>
<script>
document.getElementById('go').addEventListener('click', async () => {
  const status = document.getElementById('status');
  const body = JSON.stringify({
    username: document.getElementById('username').value,
    password: document.getElementById('password').value,
  });
  try {
    const res = await fetch('/login', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
    });
    if (!res.ok) throw new Error('login ' + res.status);
    const data = await res.json();
    localStorage.setItem('access_token', data.access_token);
    const me = await fetch('/api/me', {
      headers: { Authorization: 'Bearer ' + localStorage.getItem('access_token') },
    });
    if (!me.ok) throw new Error('me ' + me.status);
    const who = await me.json();
    status.textContent = 'Signed in as ' + who.user;
  } catch (e) {
    status.textContent = 'Login failed';
  }
});
</script>
</body></html>
`;

const app = express();
app.set('trust proxy', false);

app.get('/', (req, res) => res.redirect(302, '/login'));

app.get('/login', (req, res) => {
  res.type('html').send(loginPage());
});

app.post(
  '/login',
  bodyParser.urlencoded({ extended: true }),
  bodyParser.json(),
  multer().none(),
  (req, res) => {
    const isJson = Boolean(req.is('application/json'));
    const body = req.body && typeof req.body === 'object' ? req.body : {};
    const { username, password } = body;
    if (checkCredentials(username, password)) {
      if (isJson) {
        const token = crypto.randomBytes(24).toString('hex');
        tokens.set(token, username);
        res.status(200).json({ access_token: token, user: username });
      } else {
        const sid = crypto.randomBytes(24).toString('hex');
        sessions.set(sid, username);
        res.cookie('sid', sid, { httpOnly: true, sameSite: 'lax', path: '/' });
        res.redirect(302, '/home');
      }
    } else if (isJson) {
      res.status(401).json({ error: 'invalid credentials' });
    } else {
      res.status(200).type('html').send(loginPage('Invalid username or password.', username));
    }
  },
);

app.get('/home', (req, res) => {
  const name = sessions.get(cookies(req).sid);
  if (name === undefined) return res.redirect(302, '/login');
  res.type('text/plain').send(name);
});

app.get('/api/me', (req, res) => {
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization || '');
  const name = m ? tokens.get(m[1]) : undefined;
  if (name === undefined) return res.status(401).json({ error: 'invalid token' });
  res.json({ user: name });
});

app.get('/spa', (req, res) => {
  res.type('html').send(SPA_PAGE);
});

// Parser errors (bad JSON, unsupported Content-Encoding, multer limits/unexpected files,
// malformed multipart) become plain-text answers with their status, never a stack trace.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  const status = Number.isInteger(err.status) && err.status >= 400 && err.status < 600
    ? err.status : 400;
  res.status(status).type('text/plain').send(`${err.code || err.type || 'error'}: ${err.message}\n`);
});

const server = app.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
server.on('error', (e) => {
  console.error(e.message);
  process.exit(1);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
