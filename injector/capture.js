/*! gaitkeeper capture.js — behavioural telemetry for the login form. Schema: docs/telemetry.md (v1).
 * One IIFE; the only global it creates is window.__gaitkeeper. Every handler and every patch is
 * wrapped so that a failure here never changes what the page does: the login still submits.
 * Times are on the performance.now() clock: ms since the document's time origin (navigation start),
 * rounded to 0.1 ms. */
(() => {
  'use strict';
  const noop = () => {};
  const guard = (fn) => { try { return fn(); } catch (_) { return undefined; } };
  if (window.__gaitkeeper) return; // injected twice: the first copy keeps working

  guard(() => {
    const VERSION = '1.0.0';
    const MAX = { m: 600, p: 400, c: 100, k: 400, fc: 64, w: 64, f: 32 };
    const FORM_BYTES = 49152; // JSON bytes in the hidden field
    const HEADER_BYTES = 24576; // JSON bytes in the header (base64url: <= 32768 chars)

    const now = () => performance.now();
    const r1 = (t) => Math.round(t * 10) / 10;
    let T0 = r1(now());

    // ---- config from the injecting <script> tag ----
    const me = document.currentScript;
    const ds = (me && me.dataset) || {};
    let TOKEN = String(ds.gkToken || '');
    const FIELD = ds.gkField || '__gk';
    const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(ds.gkHeader || '') ? ds.gkHeader : 'X-Gaitkeeper-Telemetry';
    // Paths compare like the proxy matches routes: case-insensitive, '//' collapsed, no trailing '/'.
    const norm = (p) => p.toLowerCase().replace(/\/{2,}/g, '/').replace(/(.)\/$/, '$1');
    const LOGIN_URLS = String(ds.gkLoginUrls || '').split(',').map((s) => norm(s.trim())).filter(Boolean);
    let PREFIX = '/__gk/';
    guard(() => { const p = new URL(me.src, location.href).pathname; PREFIX = p.slice(0, p.lastIndexOf('/') + 1); });

    // Form members read through the prototype: legacy forms have inputs named "action", "elements"...
    const FP = HTMLFormElement.prototype;
    const formEls = Object.getOwnPropertyDescriptor(FP, 'elements').get;
    const attr = (el, name) => Element.prototype.getAttribute.call(el, name);

    // ---- state ----
    const K = []; // key events   [t, 'd'|'u', class, field, strokeId, flags]
    const C = []; // mouse clicks [t, button, 'f'|'b'|'o', x, y, holdMs|null]
    const FC = []; // focus        [t, field, method]
    const W = []; // window       [t, 'v'|'h'|'f'|'b']
    const sampler = (max, isMove) => ({ a: [], n: 0, s: 1, max, isMove });
    const M = sampler(MAX.m, () => true); // mouse moves [t, x, y]
    const P = sampler(MAX.p, (x) => x[3] === 'm'); // touch/pen [t, x, y, phase, type]
    const fields = []; // {el, i, fm, n, y, p, a, ni, kd}
    const fieldIdx = new WeakMap();
    const everPassword = new WeakSet();
    const held = new Map(); // transient pairing key -> stroke id (never sent)
    let strokes = 0, keysSeen = 0, untrusted = 0, handovers = 0;
    let lastTab = -1, lastPtr = -1, lastPtrType = '', lastPtrEl = null, lastFocusEl = null, blurredSince = false;
    let visible = document.visibilityState !== 'hidden', visAcc = 0, visFrom = T0;

    // Event time: the event's own timeStamp (same clock as performance.now()) when sane.
    const evT = (e) => { const n = now(), t = e && e.timeStamp; return t > 0 && t <= n + 1 ? Math.min(t, n) : n; };
    // Per stream: never before the script start, never before the previous entry (monotone).
    const mono = (arr, t) => r1(Math.max(t, T0, arr.length ? arr[arr.length - 1][0] : T0));
    const push = (arr, max, item) => { if (arr.length >= max) arr.shift(); arr.push(item); };
    const sample = (S, item, move) => {
      if (move && S.n++ % S.s) return;
      if (S.a.length >= S.max) { // full: keep every other move sample, double the stride
        let i = 0;
        S.a = S.a.filter((x) => !S.isMove(x) || !(i++ & 1));
        S.s *= 2;
        if (S.a.length >= S.max) S.a.splice(0, S.a.length - S.max + 1);
      }
      S.a.push(item);
    };
    const xy = (v) => Math.max(-99999, Math.min(99999, Math.round(v) || 0));
    // Browsers report -1..4 (more on exotic mice); a script-made event can carry any short.
    const btn = (b) => (Number.isInteger(b) && b >= -1 && b <= 31 ? b : -1);
    const target = (e) => (e.composedPath && e.composedPath()[0]) || e.target;

    // ---- fields ----
    const AP = Array.prototype;
    const BUTTON_TYPE = /^(hidden|submit|button|reset|image)$/; // <input> types that are not fields
    const isField = (el) => !!el && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) && !BUTTON_TYPE.test(el.type);
    const textLike = (el) => !/^(checkbox|radio|file|range|color|select)/.test(el.type);
    const indexIn = (list, el) => AP.indexOf.call(list, el);
    // Truncate by code points: a split surrogate pair would make the JSON unparsable for serde_json.
    const cut = (s, max) => [...String(s || '')].slice(0, max).join('');
    const ref = (el) => {
      if (!isField(el)) return -1;
      if (el.type === 'password') everPassword.add(el);
      let i = fieldIdx.get(el);
      if (i === undefined) {
        if (fields.length >= MAX.f) return -1;
        const form = el.form;
        i = fields.length;
        fields.push({
          el, kd: 0, p: 0, a: 0, ni: 0,
          i: form ? indexIn(formEls.call(form), el) : indexIn(document.querySelectorAll('input,textarea,select'), el),
          fm: form ? indexIn(document.forms, form) : -1,
          n: cut(attr(el, 'name'), 64),
          y: cut(el.type, 32),
        });
        fieldIdx.set(el, i);
      }
      return i;
    };
    const clickKind = (el) => {
      if (isField(el)) return 'f';
      return (el.closest && el.closest('button,[role=button]')) || (el.tagName === 'INPUT' && BUTTON_TYPE.test(el.type)) ? 'b' : 'o';
    };

    // ---- key classes: the key's identity is looked at here and nowhere else, and never kept ----
    const MODS = /^(Shift|Control|Alt|AltGraph|Meta|CapsLock|OS|Fn|Super|Hyper)$/;
    const keyClass = (e, pw) => {
      const k = e.key;
      if (typeof k !== 'string' || e.keyCode === 229) return 'o';
      if ([...k].length === 1) { // a printable character
        if (pw) return 'c'; // password fields: letter/digit/space/symbol are not told apart
        if (k === ' ') return 's';
        if (/\p{L}/u.test(k)) return 'l';
        return /\p{Nd}/u.test(k) ? 'd' : 'o';
      }
      if (MODS.test(k)) return 'm';
      if (k === 'Backspace' || k === 'Delete') return 'b';
      if (k === 'Tab') return 't';
      return k === 'Enter' ? 'e' : 'o';
    };
    const pairKey = (e) => e.code || 'k' + e.keyCode;

    // ---- listeners (window, capture phase, passive; never preventDefault) ----
    const on = (type, fn, tgt = window) =>
      tgt.addEventListener(type, (e) => guard(() => fn(e)), { capture: true, passive: true });

    const onKey = (e, down) => {
      keysSeen++;
      if (!e.isTrusted) untrusted++;
      const el = target(e), f = ref(el);
      const c = keyClass(e, f >= 0 && everPassword.has(el));
      const k = pairKey(e);
      let id = held.get(k), fl = (e.isTrusted ? 0 : 8) | (e.isComposing || e.keyCode === 229 ? 4 : 0);
      if (down) {
        if (e.repeat && id !== undefined) fl |= 1;
        else { if (e.repeat) fl |= 1; id = strokes++; held.set(k, id); }
        if (f >= 0) fields[f].kd++;
      } else if (id === undefined) { id = strokes++; fl |= 2; } else held.delete(k);
      const t = mono(K, evT(e));
      if (down && c === 't') lastTab = t;
      push(K, MAX.k, [t, down ? 'd' : 'u', c, f, id, fl]);
    };
    on('keydown', (e) => onKey(e, true));
    on('keyup', (e) => onKey(e, false));

    const TYPES = { touch: 't', pen: 'p' };
    const onPtr = (e, phase) => {
      const t = evT(e);
      if (!e.isTrusted) untrusted++;
      if (phase === 'd') lastPtrEl = target(e);
      if (phase !== 'm') { lastPtr = t; lastPtrType = e.pointerType; }
      if (e.pointerType === 'mouse') {
        if (phase === 'm') sample(M, [mono(M.a, t), xy(e.clientX), xy(e.clientY)], true);
        else if (phase === 'd') push(C, MAX.c, [mono(C, t), btn(e.button), clickKind(target(e)), xy(e.clientX), xy(e.clientY), null]);
        else if (phase === 'u' && C.length && C[C.length - 1][5] === null) C[C.length - 1][5] = r1(Math.max(0, t - C[C.length - 1][0]));
      } else if (TYPES[e.pointerType] && e.isPrimary) {
        sample(P, [mono(P.a, t), xy(e.clientX), xy(e.clientY), phase, TYPES[e.pointerType]], phase === 'm');
      }
    };
    on('pointermove', (e) => onPtr(e, 'm'));
    on('pointerdown', (e) => onPtr(e, 'd'));
    on('pointerup', (e) => onPtr(e, 'u'));
    on('pointercancel', (e) => onPtr(e, 'c'));

    on('focus', (e) => {
      const el = target(e), t = evT(e);
      if (el === window) { push(W, MAX.w, [mono(W, t), 'f']); return; }
      const f = ref(el);
      if (f < 0) return;
      // How did focus get here? A Tab keydown just before, a pointer press/release on the field
      // (or on its <label>) just before, the window coming back, or else a script / autofocus.
      const lbl = lastPtrEl && lastPtrEl.closest && lastPtrEl.closest('label');
      let how = 'programmatic';
      if (lastTab >= 0 && t - lastTab < 300 && lastTab >= lastPtr) { how = 'tab'; lastTab = -1; }
      else if (lastPtr >= 0 && t - lastPtr < 1000 && (lastPtrEl === el || (lbl && lbl.control === el))) {
        how = lastPtrType === 'mouse' ? 'mouse' : lastPtrType === 'pen' ? 'pen' : 'touch';
        lastPtr = -1;
      } else if (blurredSince && el === lastFocusEl) how = 'window';
      lastFocusEl = el;
      blurredSince = false;
      push(FC, MAX.fc, [mono(FC, t), f, how]);
    });
    on('blur', (e) => {
      if (target(e) !== window) return;
      held.clear(); // key-ups are lost while another window has focus
      blurredSince = true;
      push(W, MAX.w, [mono(W, evT(e)), 'b']);
    });
    on('visibilitychange', (e) => {
      const t = evT(e), vis = document.visibilityState !== 'hidden';
      if (vis === visible) return;
      if (visible) visAcc += t - visFrom; else visFrom = t;
      visible = vis;
      push(W, MAX.w, [mono(W, t), vis ? 'v' : 'h']);
    }, document);
    on('paste', (e) => { const f = ref(target(e)); if (f >= 0) fields[f].p++; });
    on('input', (e) => {
      const el = target(e), f = ref(el);
      if (f < 0) return;
      fields[f].ni++;
      // Autofill / password manager: a text field changed by something that is not typing.
      if (textLike(el) && (!e.inputType || e.inputType === 'insertReplacementText')) fields[f].a |= 1;
    });

    // initial state
    push(W, MAX.w, [T0, visible ? 'v' : 'h']);
    push(W, MAX.w, [T0, document.hasFocus() ? 'f' : 'b']);
    guard(() => { const f = ref(document.activeElement); if (f >= 0) { lastFocusEl = document.activeElement; FC.push([T0, f, 'initial']); } });

    // ---- payload ----
    const matchesAutofill = (el) => guard(() => el.matches(':autofill')) || guard(() => el.matches(':-webkit-autofill')) || false;
    const build = (hv, form) => {
      if (form) for (const el of formEls.call(form)) ref(el);
      else for (const el of document.querySelectorAll('input[type=password]')) ref(el);
      const t1 = r1(Math.max(now(), T0));
      const vis = r1(Math.min(t1 - T0, Math.max(0, visAcc + (visible ? t1 - visFrom : 0))));
      return {
        v: 1, cv: VERSION, tk: TOKEN, hv, n: handovers, t0: T0, t1, vis,
        vp: [Math.round(innerWidth / 10) * 10, Math.round(innerHeight / 10) * 10],
        u: untrusted, tr: 0,
        f: fields.map((F) => {
          const el = F.el;
          guard(() => {
            if (matchesAutofill(el)) F.a |= 2;
            if (textLike(el) && !F.kd && !F.p && el.value !== '' && el.value !== el.defaultValue) F.a |= 4;
          });
          return { i: F.i, fm: F.fm, n: F.n, y: F.y, p: F.p, a: F.a, ni: F.ni };
        }),
        fc: FC.slice(), k: K.slice(), kn: keysSeen,
        m: M.a.slice(), mi: [M.n, M.s], p: P.a.slice(), pi: [P.n, P.s],
        c: C.map((x) => x.slice()), w: W.slice(),
      };
    };
    const enc = new TextEncoder();
    // Shrink until the JSON fits: mouse first (decimated, keeps the shape), then touch, clicks,
    // keys (oldest first), focus and window events; last resort: no arrays. The token stays.
    const fit = (p, limit) => {
      let s = JSON.stringify(p);
      const steps = [['m', 1, 'e'], ['p', 2, 'e'], ['c', 4, 'o'], ['k', 8, 'o'], ['fc', 16, 'o'], ['w', 32, 'o']];
      for (const [key, bit, how] of steps) {
        while (enc.encode(s).length > limit && p[key].length) {
          const a = p[key];
          p[key] = a.length < 2 ? [] : how === 'e' ? a.filter((_, i) => !(i & 1)) : a.slice(a.length >> 1);
          p.tr |= bit;
          s = JSON.stringify(p);
        }
      }
      if (enc.encode(s).length > limit) {
        p.f = []; p.tr |= 64;
        s = JSON.stringify(p);
      }
      return s;
    };
    const b64url = (str) => {
      const b = enc.encode(str);
      let bin = '';
      for (let i = 0; i < b.length; i += 0x8000) bin += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    };

    // ---- hand-over 1: classic forms (hidden field) ----
    const eligible = (form) =>
      document.forms.length === 1 || AP.some.call(formEls.call(form), (el) => el.type === 'password');
    const loginPath = (path) => LOGIN_URLS.some((p) => (p.endsWith('*') ? path.startsWith(p.slice(0, -1)) : path === p));
    // With login URLs configured, only a form that posts to one of them carries telemetry: the
    // proxy strips it only there, so any other form would hand it to the app.
    const postsToLogin = (form, submitter) => {
      if (!LOGIN_URLS.length) return true;
      const action = (submitter && attr(submitter, 'formaction')) || attr(form, 'action') || '';
      const url = new URL(action, document.baseURI);
      return url.origin === location.origin && loginPath(norm(url.pathname));
    };
    const handOverForm = (form, submitter, hv) => {
      if (!(form instanceof HTMLFormElement) || !eligible(form) || !postsToLogin(form, submitter)) return;
      const method = ((submitter && attr(submitter, 'formmethod')) || attr(form, 'method') || 'get').toLowerCase();
      if (method !== 'post') return; // never put telemetry into a URL
      handovers++;
      const json = fit(build(hv, form), FORM_BYTES);
      let input = AP.find.call(formEls.call(form), (el) => el.name === FIELD && el.type === 'hidden');
      if (!input) {
        input = document.createElement('input');
        input.type = 'hidden';
        input.name = FIELD;
        Node.prototype.appendChild.call(form, input);
      }
      input.value = json;
    };
    on('submit', (e) => handOverForm(e.target, e.submitter, 'submit'));
    // form.submit() fires no submit event, so it is patched. requestSubmit() is not: it fires the
    // submit event (caught above) and then submits through the internal algorithm, not submit().
    const origSubmit = FP.submit;
    FP.submit = function submit() {
      guard(() => handOverForm(this, null, 'form.submit'));
      return origSubmit.apply(this, arguments);
    };

    // ---- page tokens: fresh ones from login answers, renewed before they expire ----
    // A token is single use; every answer to a login carries a fresh one for this page, so a
    // retry after a typo is a new login, not a replay. Long-lived pages renew theirs.
    const TOKEN_HEADER = 'X-Gaitkeeper-Token', RESET_HEADER = 'X-Gaitkeeper-Token-Reset';
    const EPOCH_MS = 12 * 3600e3; // past this, a renewal starts the telemetry anew
    let renewAt = Infinity, renewTimer = 0;
    const claims = (tk) => guard(() => JSON.parse(atob(tk.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')))) || {};
    // Start over: what was recorded belongs to an older page epoch.
    const resetEpoch = () => {
      T0 = r1(now());
      K.length = 0; C.length = 0; FC.length = 0; W.length = 0;
      M.a = []; M.n = 0; M.s = 1; P.a = []; P.n = 0; P.s = 1;
      for (const F of fields) { F.p = 0; F.a = 0; F.ni = 0; F.kd = 0; }
      held.clear(); strokes = 0; keysSeen = 0; untrusted = 0; handovers = 0;
      lastTab = -1; lastPtr = -1; visAcc = 0; visFrom = T0;
      W.push([T0, visible ? 'v' : 'h'], [T0, document.hasFocus() ? 'f' : 'b']);
    };
    const scheduleRenewal = () => {
      const c = claims(TOKEN);
      const ttl = (c.exp - c.iat) * 1000;
      if (!(ttl > 0)) return;
      renewAt = now() + ttl * 0.75;
      clearTimeout(renewTimer);
      renewTimer = setTimeout(() => guard(renew), Math.min(ttl * 0.75, 2147483647));
    };
    const takeToken = (get) => guard(() => {
      const tk = get(TOKEN_HEADER);
      if (typeof tk !== 'string' || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(tk)) return;
      if (get(RESET_HEADER) === '1') resetEpoch();
      TOKEN = tk;
      scheduleRenewal();
    });
    let origFetch = window.fetch;
    const renew = () => {
      if (typeof origFetch !== 'function' || !TOKEN) return;
      const reset = now() - T0 > EPOCH_MS;
      const headers = { [TOKEN_HEADER]: TOKEN };
      if (reset) headers[RESET_HEADER] = '1';
      origFetch.call(window, PREFIX + 'token', { method: 'POST', headers, credentials: 'same-origin', cache: 'no-store' })
        .then((r) => (r.ok ? r.json() : null))
        .then((j) => guard(() => {
          if (!j || typeof j.token !== 'string') return;
          if (reset) resetEpoch();
          TOKEN = j.token;
          scheduleRenewal();
        }), noop);
    };
    scheduleRenewal();
    // Timers sleep with the laptop and in background tabs: catch up when the page is seen.
    on('visibilitychange', () => { if (document.visibilityState === 'visible' && now() >= renewAt) renew(); }, document);

    // ---- in-page step-up: the challenge shown over the page, the login resumed ----
    // A fetch/XHR login gaitkeeper challenges is answered 401 with the challenge's URL. The
    // page's own code never sees that answer: the challenge is shown in an overlay (a frame of
    // gaitkeeper's page, or a popup where the page's CSP forbids frames); once it is passed,
    // gaitkeeper's page hands this script a one-time proof, the request is sent again with it,
    // and the app's real answer to the held login resolves the page's original request.
    const challengeUrl = (u) => guard(() => {
      const url = new URL(String(u), location.href);
      return url.origin === location.origin && url.pathname.startsWith(PREFIX + 'challenge/') ? url : null;
    });
    const box = (build) => {
      const host = document.createElement('div');
      host.setAttribute('data-gaitkeeper', '');
      host.style.cssText = 'position:fixed;inset:0;z-index:2147483647;background:rgba(0,0,0,.55);display:flex;align-items:center;justify-content:center';
      const root = host.attachShadow ? host.attachShadow({ mode: 'open' }) : host; // open: readable by tests and assistive tools
      const panel = document.createElement('div');
      panel.setAttribute('role', 'dialog');
      panel.setAttribute('aria-modal', 'true');
      panel.style.cssText = 'background:#fff;color:#111;border-radius:8px;max-width:30rem;width:calc(100% - 2rem);max-height:calc(100% - 2rem);display:flex;flex-direction:column;overflow:hidden;font:16px/1.5 system-ui,sans-serif;box-shadow:0 8px 32px rgba(0,0,0,.4)';
      build(panel);
      root.appendChild(panel);
      (document.body || document.documentElement).appendChild(host);
      return host;
    };
    const button = (text, onclick) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = text;
      b.style.cssText = 'margin:.75rem;padding:.6rem 1rem;font:inherit;border:0;border-radius:4px;background:#0b57d0;color:#fff;cursor:pointer';
      b.addEventListener('click', onclick);
      return b;
    };
    // Resolves with the proof, or null when the person gives up.
    const stepUp = (url) => new Promise((resolve) => {
      let host = null, popup = null, frame = null, settled = false;
      const done = (proof) => {
        if (settled) return;
        settled = true;
        window.removeEventListener('message', onMessage);
        document.removeEventListener('securitypolicyviolation', onViolation);
        if (host) host.remove();
        if (popup && !popup.closed) popup.close();
        resolve(proof);
      };
      // From gaitkeeper's page in the frame, the popup, or a provider's window opened from
      // the frame (its source is none of ours): only the page's own origin is trusted. A
      // proof is worthless to anyone but the client that passed the challenge.
      const onMessage = (e) => guard(() => {
        const proof = e.data && e.data.gaitkeeper && e.data.gaitkeeper.resume;
        if (e.origin === location.origin && typeof proof === 'string' && /^[\w-]{16,128}$/.test(proof)) done(proof);
      });
      const inline = (mode) => { const u = new URL(url.href); u.searchParams.set('inline', mode); return u.href; };
      const openPopup = () => { popup = window.open(inline('popup'), 'gaitkeeper-challenge', 'popup,width=480,height=680'); };
      // The page's CSP forbids frames: offer a window instead (a click, so it is not blocked).
      const onViolation = (e) => guard(() => {
        if (!frame || !/^(frame|child|default)-src/.test(e.violatedDirective || e.effectiveDirective || '')) return;
        frame.remove(); frame = null;
        const panel = host.shadowRoot || host;
        const note = document.createElement('p');
        note.style.cssText = 'margin:1rem 1rem 0';
        note.textContent = 'One more step is needed to sign in. It opens in a new window.';
        panel.firstChild.insertBefore(note, panel.firstChild.firstChild);
        panel.firstChild.insertBefore(button('Continue', openPopup), note.nextSibling);
      });
      window.addEventListener('message', onMessage);
      document.addEventListener('securitypolicyviolation', onViolation);
      host = guard(() => box((panel) => {
        frame = document.createElement('iframe');
        frame.title = 'Confirm it is you';
        frame.src = inline('frame');
        frame.style.cssText = 'border:0;width:100%;height:34rem;max-height:calc(100vh - 6rem)';
        // The login form still has focus, so the page's autofocus would be ignored: put the
        // cursor in the code field, so the person can just type.
        frame.addEventListener('load', () => guard(() => {
          const d = frame.contentDocument, field = d && d.querySelector('[autofocus]');
          if (field) field.focus(); else frame.focus();
        }));
        panel.appendChild(frame);
        panel.appendChild(button('Cancel', () => done(null)));
      }));
      // No document to show it in: the old way, the whole page goes to the challenge.
      if (!host) { location.assign(url.href); done(null); }
    });
    // A login refused by gaitkeeper: the page's own code gets the refusal; the person sees
    // the reference to give the help desk.
    const showIncident = (ref) => guard(() => {
      if (typeof ref !== 'string' || !/^[\w-]{1,64}$/.test(ref)) return;
      const host = box((panel) => {
        const text = document.createElement('div');
        text.style.cssText = 'padding:1rem 1rem 0';
        const h = document.createElement('strong');
        h.textContent = 'Sign-in refused';
        const p = document.createElement('p');
        p.textContent = 'This sign-in attempt was refused for your protection. If this was you, contact support and give them this reference: ';
        const code = document.createElement('code');
        code.textContent = ref;
        p.appendChild(code);
        text.appendChild(h);
        text.appendChild(p);
        panel.appendChild(text);
        panel.appendChild(button('OK', () => host.remove()));
      });
    });

    // ---- hand-over 2: fetch / XMLHttpRequest logins (header, base64url of the UTF-8 JSON) ----
    const isLogin = (u, method) => {
      const url = new URL(String(u), location.href);
      if (url.origin !== location.origin) return false; // never trigger a CORS preflight
      const path = norm(url.pathname);
      if (LOGIN_URLS.length) return loginPath(path);
      if (/^(get|head)$/i.test(method || 'GET')) return false;
      return AP.some.call(document.forms, (f) =>
        eligible(f) && norm(new URL(attr(f, 'action') || '', document.baseURI).pathname) === path);
    };
    const headerValue = (hv) => { handovers++; return b64url(fit(build(hv, null), HEADER_BYTES)); };
    const RESUME_HEADER = 'X-Gaitkeeper-Resume';

    if (typeof origFetch === 'function') {
      window.fetch = function fetch(input, init) {
        let args = arguments, hit = false, again = null;
        guard(() => {
          const isReq = input instanceof Request;
          const method = (init && init.method) || (isReq ? input.method : 'GET');
          if (!isLogin(isReq ? input.url : input, method)) return;
          const h = new Headers(init && init.headers !== undefined ? init.headers : isReq ? input.headers : undefined);
          const copy = {};
          for (const key in init) copy[key] = init[key];
          // The request sent again after a passed challenge: gaitkeeper puts the held login
          // in its place, so it carries only the proof (no body, no telemetry).
          again = (proof) => {
            const r = new Headers(h);
            r.delete(HEADER);
            r.set(RESUME_HEADER, proof);
            const c = Object.assign({}, copy, { method, headers: r, body: undefined, credentials: copy.credentials || 'same-origin' });
            return origFetch.call(window, isReq ? input.url : input, c);
          };
          h.set(HEADER, headerValue('fetch'));
          copy.headers = h;
          args = [input, copy];
          hit = true;
        });
        const res = origFetch.apply(this, args); // errors and the promise are the page's own
        if (!hit) return res;
        return res.then((r) => {
          let next = null;
          guard(() => {
            takeToken((n) => r.headers.get(n));
            const url = r.status === 401 && challengeUrl(r.headers.get('x-gaitkeeper-challenge'));
            if (url) next = stepUp(url).then((proof) => (proof ? again(proof).then((r2) => { takeToken((n) => r2.headers.get(n)); return r2; }) : r));
            else showIncident(r.headers.get('x-gaitkeeper-incident'));
          });
          return next || r;
        });
      };
    }

    // XHR: the page's handlers must not see a challenge either. Listeners on the request run
    // in the order they were added (Chromium does not run capture listeners first on an XHR,
    // whatever the page added earlier runs earlier), so every XHR gets gaitkeeper's listener
    // when it is constructed, before the page can add its own: a challenged round's events
    // are held back; after the challenge the same object is opened and sent again, and the
    // page's handlers see the app's real answer.
    const XHR = window.XMLHttpRequest, XP = XHR.prototype;
    const origOpen = XP.open, origSend = XP.send, origSetHeader = XP.setRequestHeader;
    const xhrInfo = new WeakMap();
    const EVENTS = ['readystatechange', 'load', 'loadend', 'progress', 'error', 'abort', 'timeout'];
    const listenFirst = (xhr) => {
      const st = { login: false, held: false, resending: false, method: 'GET', url: '', async: true, headers: [], challenge: null };
      xhrInfo.set(xhr, st);
      const hold = (e) => guard(() => {
        if (!st.login || st.resending) return;
        if (!st.held && xhr.readyState >= 2) {
          takeToken((n) => xhr.getResponseHeader(n));
          const url = xhr.status === 401 && challengeUrl(xhr.getResponseHeader('x-gaitkeeper-challenge'));
          if (url) { st.held = true; st.challenge = url; }
          else if (xhr.readyState === 4 && e.type === 'load') showIncident(xhr.getResponseHeader('x-gaitkeeper-incident'));
        }
        if (!st.held) return;
        e.stopImmediatePropagation();
        if (e.type !== 'loadend') return;
        // The challenged round is over: show the challenge, then send again or give the page
        // the 401 it would have had.
        stepUp(st.challenge).then((proof) => guard(() => {
          st.held = false;
          if (!proof) {
            st.login = false;
            for (const type of ['readystatechange', 'load', 'loadend']) xhr.dispatchEvent(new ProgressEvent(type));
            return;
          }
          st.resending = true;
          origOpen.call(xhr, st.method, st.url, true);
          st.resending = false;
          for (const [n, v] of st.headers) if (n.toLowerCase() !== HEADER.toLowerCase()) origSetHeader.call(xhr, n, v);
          origSetHeader.call(xhr, RESUME_HEADER, proof);
          origSend.call(xhr, null);
        }));
      });
      for (const type of EVENTS) xhr.addEventListener(type, hold, true);
      return st;
    };
    guard(() => {
      const Wrapped = class XMLHttpRequest extends XHR {
        constructor() { super(); guard(() => listenFirst(this)); }
      };
      window.XMLHttpRequest = Wrapped;
    });
    XP.open = function open(method, url, async) {
      guard(() => {
        const st = xhrInfo.get(this) || listenFirst(this); // made before the script ran
        if (st.resending) return;
        Object.assign(st, { login: false, held: false, method, url, async: async !== false, headers: [] });
      });
      return origOpen.apply(this, arguments);
    };
    XP.setRequestHeader = function setRequestHeader(name, value) {
      guard(() => { const st = xhrInfo.get(this); if (st) st.headers.push([name, value]); });
      return origSetHeader.apply(this, arguments);
    };
    XP.send = function send() {
      guard(() => {
        const st = xhrInfo.get(this);
        if (!st || !isLogin(st.url, st.method)) return;
        origSetHeader.call(this, HEADER, headerValue('xhr'));
        st.login = st.async; // a synchronous request cannot wait for a challenge
      });
      return origSend.apply(this, arguments);
    };

    window.__gaitkeeper = Object.freeze({
      version: VERSION,
      payload: () => JSON.parse(fit(build('debug', null), FORM_BYTES)),
    });
  });
})();
