// A real OpenID Connect provider for gaitkeeper's integration tests: panva's oidc-provider
// (8.x, certified by the OpenID Foundation) with a plain HTML login form a test drives with
// plain HTTP. Prints `ready` once it listens on 127.0.0.1.
//
//   node provider.js --port PORT
//        --client ID:SECRET:REDIRECT_URI   (repeatable; confidential, client_secret_basic)
//        --user NAME:PASSWORD              (repeatable)
//        [--otp CODE]                      (the one-time code every user's second factor shows)
//
// Each user's account id is `acct-NAME` (the `sub`); `preferred_username` is NAME and `email`
// is NAME@example.test (verified). The login form takes the user name, the password and an
// optional one-time code: with the right code the sign-in has acr `urn:gaitkeeper:test:mfa` and
// amr ["pwd", "otp"], without one acr `urn:gaitkeeper:test:pwd` and amr ["pwd"]. auth_time is
// the moment the form was accepted, and the session is remembered: a later authorization with a
// large max_age is answered from it without a new sign-in (auth_time stays the old one), as a
// real provider does.

import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

export const ACR_PWD = 'urn:gaitkeeper:test:pwd';
export const ACR_MFA = 'urn:gaitkeeper:test:mfa';

function parseArgs(argv) {
  const args = { client: [], user: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    if (Array.isArray(args[key])) args[key].push(value);
    else args[key] = value;
  }
  if (!args.port) throw new Error('--port is required');
  return args;
}

const args = parseArgs(process.argv.slice(2));
const issuer = `http://127.0.0.1:${args.port}`;
const otp = args.otp || '246810';

const users = new Map();
for (const spec of args.user) {
  const at = spec.indexOf(':');
  const name = spec.slice(0, at);
  users.set(name, { name, password: spec.slice(at + 1), accountId: `acct-${name}` });
}
const accounts = new Map([...users.values()].map((u) => [u.accountId, u]));

const clients = args.client.map((spec) => {
  const [clientId, secret, ...rest] = spec.split(':');
  return {
    client_id: clientId,
    client_secret: secret,
    redirect_uris: [rest.join(':')],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    require_auth_time: true,
  };
});

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  acrValues: [ACR_PWD, ACR_MFA],
  claims: {
    // amr with every sign-in's ID token, as most providers do (acr comes with acr_values).
    openid: ['sub', 'amr'],
    profile: ['preferred_username'],
    email: ['email', 'email_verified'],
  },
  // Like most providers, put the user's claims in the ID token (its signature covers them).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true, methods: ['S256'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = accounts.get(id);
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: user.name,
          email: `${user.name}@example.test`,
          email_verified: true,
        };
      },
    };
  },
  // First-party clients: the grant is given at sign-in, no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId, grant.jti);
    return grant;
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>error</title><h1>${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p>`;
  },
});

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginForm(uid, clientId, error) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1>Sign in to continue to ${escape(clientId)}</h1>
${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User name <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<label>One-time code (optional) <input name="otp" inputmode="numeric" autocomplete="one-time-code"></label>
<button type="submit">Sign in</button>
</form></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

const handler = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, issuer).pathname;
    const match = path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (!match) {
      handler(req, res);
      return;
    }
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && !match[2]) {
      send(res, 200, loginForm(details.uid, details.params.client_id, null));
      return;
    }
    if (req.method === 'POST' && match[2]) {
      const form = await readForm(req);
      const user = users.get(form.get('username') || '');
      if (!user || user.password !== form.get('password')) {
        send(res, 401, loginForm(details.uid, details.params.client_id, 'Wrong user name or password.'));
        return;
      }
      const code = form.get('otp') || '';
      if (code && code !== otp) {
        send(res, 401, loginForm(details.uid, details.params.client_id, 'Wrong one-time code.'));
        return;
      }
      const strong = code === otp;
      await provider.interactionFinished(req, res, {
        login: {
          accountId: user.accountId,
          acr: strong ? ACR_MFA : ACR_PWD,
          amr: strong ? ['pwd', 'otp'] : ['pwd'],
          remember: true,
        },
      }, { mergeWithLastSubmission: false });
      return;
    }
    send(res, 405, 'method not allowed');
  } catch (error) {
    send(res, 400, `<!DOCTYPE html><title>error</title><p>${escape(error.message)}</p>`);
  }
});

server.listen(Number(args.port), '127.0.0.1', () => {
  console.log('ready');
});
