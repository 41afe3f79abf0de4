#!/usr/bin/env python3
"""Login-body variants that probe how leniently the real test apps parse a login.

Stdlib only. Each variant is a POST body (plus its Content-Type and any extra headers) carrying
the correct password; the question is whether the app logs the user in, and under which name.
Findings: tests/apps/PARSERS.md.

    python3 tests/apps/variants.py list
    python3 tests/apps/variants.py show VARIANT [--app django|express] [--body-only]
    python3 tests/apps/variants.py send VARIANT --app django --base http://127.0.0.1:PORT \
        --user alice --password PW
    python3 tests/apps/variants.py all --django http://127.0.0.1:P1 --express http://127.0.0.1:P2 \
        --user alice --password PW          # markdown table of every variant against both

`show` prints the request headers a variant sets, a blank line, then the body with escapes
(or with --body-only the raw body bytes, e.g. for `curl --data-binary @-`).

Against Django the client first GETs /admin/login/ for the csrftoken cookie and form token, then
posts to /admin/login/?next=/admin/ with the token both as the first body field (where the body
has fields) and as an X-CSRFToken header, so a body Django cannot parse reaches the login form
instead of failing CSRF (send --no-csrf-header to leave the header out). A login counts as
successful when the app answers with a session (Django 302 + sessionid, then GET /whoami;
Express 302 + sid, then GET /home; Express JSON 200 + access_token, then GET /api/me). On a
failed form login both apps re-render the form with the username they parsed, which is reported.
"""
import argparse
import base64
import gzip
import html
import json
import re
import socket
import sys
import urllib.parse
import zlib

CRLF = b"\r\n"


# ---------------------------------------------------------------- body builders

class Ctx:
    """What a variant builder gets: the app, the credentials and Django's CSRF token."""

    def __init__(self, app, user, password, csrf=None):
        self.app, self.user, self.password, self.csrf = app, user, password, csrf

    def csrf_fields(self):
        return [("csrfmiddlewaretoken", self.csrf)] if self.app == "django" and self.csrf else []

    def u(self):
        return self.user.encode()

    def p(self):
        return self.password.encode()


def cd(name):
    return b'Content-Disposition: form-data; name="' + name.encode() + b'"'


def multipart(parts, boundary, eol=CRLF):
    """parts: [(header lines, content bytes)]; header lines joined by eol, then a blank line."""
    out = b""
    for headers, content in parts:
        out += b"--" + boundary + eol
        for h in headers:
            out += h + eol
        out += eol + content + eol
    return out + b"--" + boundary + b"--" + eol


def fields_parts(ctx, username_part=None, before=(), after=()):
    """CSRF field, `before` parts, the username part (default: a plain one), password, `after`."""
    parts = [([cd(k)], v.encode()) for k, v in ctx.csrf_fields()]
    parts += list(before)
    parts.append(username_part or ([cd("username")], ctx.u()))
    parts.append(([cd("password")], ctx.p()))
    parts += list(after)
    return parts


def mp_ct(boundary):
    return "multipart/form-data; boundary=" + boundary.decode()


def mp_simple(ctx, boundary, username_part=None, before=()):
    body = multipart(fields_parts(ctx, username_part, before), boundary)
    return {"content_type": mp_ct(boundary), "body": body}


def urlenc(ctx, raw_pairs, sep=b"&"):
    """raw_pairs: already-encoded (name, value) bytes; the CSRF field is always &-joined first."""
    pre = [urllib.parse.urlencode(ctx.csrf_fields()).encode()] if ctx.csrf_fields() else []
    body = sep.join(k + b"=" + v for k, v in raw_pairs)
    return {
        "content_type": "application/x-www-form-urlencoded",
        "body": b"&".join(pre + [body]),
    }


def q(s):
    return urllib.parse.quote(s, safe="").encode()


def brotli_stored(data):
    """A valid Brotli stream holding `data` in uncompressed meta-blocks (stdlib has no brotli)."""
    bits = []

    def put(value, n):
        bits.extend((value >> i) & 1 for i in range(n))

    def pad():
        while len(bits) % 8:
            bits.append(0)

    def flush():
        out = bytearray()
        for i in range(0, len(bits), 8):
            out.append(sum(b << j for j, b in enumerate(bits[i:i + 8])))
        bits.clear()
        return bytes(out)

    out = b""
    put(0, 1)  # WBITS = 16
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        put(0, 1)  # ISLAST = 0
        put(0, 2)  # MNIBBLES = 4
        put(len(chunk) - 1, 16)  # MLEN - 1
        put(1, 1)  # ISUNCOMPRESSED
        pad()
        out += flush() + chunk
    put(1, 1)  # ISLAST
    put(1, 1)  # ISLASTEMPTY
    pad()
    return out + flush()


def encoded(kind):
    def build(ctx):
        v = urlenc(ctx, [(b"username", q(ctx.user)), (b"password", q(ctx.password))])
        body = v["body"]
        if kind == "gzip":
            v["body"] = gzip.compress(body)
        elif kind == "deflate":
            v["body"] = zlib.compress(body)  # HTTP "deflate" = zlib-wrapped
        elif kind == "br":
            v["body"] = brotli_stored(body)
        v["headers"] = [("Content-Encoding", kind)]
        return v
    return build


def json_body(ctx):
    return {
        "content_type": "application/json",
        "body": json.dumps({"username": ctx.user, "password": ctx.password}).encode(),
    }


def ws_variant(prefix, suffix):
    def build(ctx):
        return urlenc(ctx, [(b"username", prefix + q(ctx.user) + suffix),
                            (b"password", q(ctx.password))])
    return build


def fullwidth(ctx):
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ctx.user)
    return urlenc(ctx, [(b"username", q(wide)), (b"password", q(ctx.password))])


def boundary_len(n):
    def build(ctx):
        return mp_simple(ctx, (b"b" * n)[:n])
    return build


def dup_boundary(body_uses):
    def build(ctx):
        first, second = b"FirstBoundary1111", b"SecondBoundary2222"
        v = mp_simple(ctx, first if body_uses == "first" else second)
        v["content_type"] = ("multipart/form-data; boundary=" + first.decode()
                              + "; boundary=" + second.decode())
        return v
    return build


def username_part(headers):
    def build(ctx):
        return mp_simple(ctx, b"XyZzY", username_part=(headers, ctx.u()))
    return build


def no_blank_line(ctx):
    b = b"XyZzY"
    parts = fields_parts(ctx)
    body = b""
    for headers, content in parts:
        body += b"--" + b + CRLF + b"\r\n".join(headers) + CRLF
        if headers == [cd("username")]:
            body += content + CRLF  # no blank line between headers and content
        else:
            body += CRLF + content + CRLF
    body += b"--" + b + b"--" + CRLF
    return {"content_type": mp_ct(b), "body": body}


def many_parts(n):
    def build(ctx):
        junk = [([cd("f%d" % i)], b"x") for i in range(n - 2 - len(ctx.csrf_fields()))]
        return mp_simple(ctx, b"XyZzY", before=junk)
    return build


def cte_base64(ctx):
    headers = [cd("username"), b"Content-Transfer-Encoding: base64"]
    return mp_simple(ctx, b"XyZzY", username_part=(headers, base64.b64encode(ctx.u())))


def preamble_username(ctx):
    """The username part sits in the preamble (before the first delimiter line)."""
    b = b"XyZzY"
    parts = [([cd(k)], v.encode()) for k, v in ctx.csrf_fields()] + [([cd("password")], ctx.p())]
    body = cd("username") + CRLF + CRLF + ctx.u() + CRLF + multipart(parts, b)
    return {"content_type": mp_ct(b), "body": body}


def lf_only(ctx):
    b = b"XyZzY"
    return {"content_type": mp_ct(b), "body": multipart(fields_parts(ctx), b, eol=b"\n")}


VARIANTS = {
    # name: (description, builder)
    "baseline-urlencoded": ("control: plain urlencoded login",
                            lambda c: urlenc(c, [(b"username", q(c.user)),
                                                 (b"password", q(c.password))])),
    "baseline-multipart": ("control: plain multipart login", lambda c: mp_simple(c, b"XyZzY")),
    "boundary-71": ("a. multipart, 71-char boundary (RFC 2046 max is 70)", boundary_len(71)),
    "boundary-150": ("a. multipart, 150-char boundary", boundary_len(150)),
    "boundary-250": ("a'. multipart, 250-char boundary", boundary_len(250)),
    "dup-boundary-body-first": ("b. two boundary= params, body uses the first",
                                dup_boundary("first")),
    "dup-boundary-body-second": ("b. two boundary= params, body uses the second",
                                 dup_boundary("second")),
    "rfc2231-name": ("c. username part: name*=UTF-8''username",
                     username_part([b"Content-Disposition: form-data; name*=UTF-8''username"])),
    "cd-leading-space": ("d. username part: Content-Disposition line starts with a space",
                         username_part([b" " + cd("username")])),
    "no-blank-line": ("e. username part without the blank line before its content",
                      no_blank_line),
    "parts-1500": ("f. 1,500 parts: junk fields, then username and password", many_parts(1500)),
    "dup-cd-other-first": ("g. username part: CD name=\"other\" then CD name=\"username\"",
                           username_part([cd("other"), cd("username")])),
    "dup-cd-username-first": ("g. username part: CD name=\"username\" then CD name=\"other\"",
                              username_part([cd("username"), cd("other")])),
    "cte-base64": ("h. username part: Content-Transfer-Encoding: base64, base64 name", cte_base64),
    "ws-trailing-space": ("i. urlencoded username 'alice '", ws_variant(b"", b"%20")),
    "ws-leading-space": ("i. urlencoded username ' alice'", ws_variant(b"%20", b"")),
    "ws-trailing-tab": ("i. urlencoded username 'alice\\t'", ws_variant(b"", b"%09")),
    "ws-trailing-nbsp": ("i. urlencoded username 'alice%C2%A0' (NBSP)",
                         ws_variant(b"", b"%C2%A0")),
    "fullwidth": ("i. urlencoded fullwidth username (U+FF41...)", fullwidth),
    "dup-username-last-real": ("j. urlencoded username=a&username=alice",
                               lambda c: urlenc(c, [(b"username", b"a"),
                                                    (b"username", q(c.user)),
                                                    (b"password", q(c.password))])),
    "dup-username-first-real": ("j. urlencoded username=alice&username=a",
                                lambda c: urlenc(c, [(b"username", q(c.user)),
                                                     (b"username", b"a"),
                                                     (b"password", q(c.password))])),
    "semicolon-separator": ("j. urlencoded username=alice;password=PW",
                            lambda c: urlenc(c, [(b"username", q(c.user)),
                                                 (b"password", q(c.password))], sep=b";")),
    "json": ("k. application/json body", json_body),
    "gzip-urlencoded": ("l. urlencoded, Content-Encoding: gzip", encoded("gzip")),
    "deflate-urlencoded": ("l'. urlencoded, Content-Encoding: deflate", encoded("deflate")),
    "br-urlencoded": ("l'. urlencoded, Content-Encoding: br", encoded("br")),
    "lf-only": ("m. multipart with bare LF line endings", lf_only),
    "preamble-username": ("extra: username part in the preamble, before the first delimiter",
                          preamble_username),
    "obs-fold": ("n. username part: '; name=\"username\"' on a folded continuation line",
                 username_part([b"Content-Disposition: form-data", b' ; name="username"'])),
}


def build(name, ctx):
    v = VARIANTS[name][1](ctx)
    v.setdefault("headers", [])
    return v


# ---------------------------------------------------------------- raw HTTP client

class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def cookie(self, name):
        for v in self.header("Set-Cookie"):
            k, _, rest = v.partition("=")
            if k.strip() == name:
                return rest.split(";", 1)[0]
        return None


def http(base, method, target, headers=(), body=b"", timeout=60):
    u = urllib.parse.urlsplit(base)
    host, port = u.hostname, u.port or 80
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    status = int(head_lines[0].split()[1])
    hdrs = [tuple(x.strip() for x in line.split(":", 1)) for line in head_lines[1:] if ":" in line]
    r = Resp(status, hdrs, rest)
    if any(v.lower() == "chunked" for v in r.header("Transfer-Encoding")):
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2:]
        r.body = out
    return r


def form_username(body):
    """The username value a re-rendered login form shows."""
    m = re.search(rb'<input[^>]*name="username"[^>]*>', body)
    if not m:
        return None
    v = re.search(rb'value="([^"]*)"', m.group(0))
    return html.unescape(v.group(1).decode()) if v else ""


def send(app, base, name, user, password, csrf_header=True):
    """Runs one variant; returns (logged_in: bool, summary: str)."""
    if app == "django":
        page = http(base, "GET", "/admin/login/?next=/admin/")
        cookie = page.cookie("csrftoken")
        m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        ctx = Ctx(app, user, password, m.group(1).decode())
        v = build(name, ctx)
        headers = [("Cookie", f"csrftoken={cookie}")]
        if csrf_header:
            headers.append(("X-CSRFToken", ctx.csrf))
        target = "/admin/login/?next=/admin/"
    else:
        ctx = Ctx(app, user, password)
        v = build(name, ctx)
        headers, target = [], "/login"
    headers = [("Content-Type", v["content_type"])] + headers + v["headers"]
    r = http(base, "POST", target, headers, v["body"])
    if app == "django":
        sid = r.cookie("sessionid")
        if r.status == 302 and sid:
            who = http(base, "GET", "/whoami", [("Cookie", f"sessionid={sid}")]).body.decode()
            return who != "anonymous", f"logged in as {who!r}"
        if r.status == 200:
            return False, f"rejected, form saw username={form_username(r.body)!r}"
        if r.status == 403:
            return False, "403 CSRF failure"
        return False, f"{r.status} {first_line(r.body)}"
    sid = r.cookie("sid")
    if r.status == 302 and sid:
        who = http(base, "GET", "/home", [("Cookie", f"sid={sid}")]).body.decode()
        return True, f"logged in as {who!r}"
    if r.status == 200 and r.body.startswith(b"{"):
        tok = json.loads(r.body)["access_token"]
        me = json.loads(http(base, "GET", "/api/me", [("Authorization", f"Bearer {tok}")]).body)
        return True, f"logged in as {me['user']!r} (token)"
    if r.status == 200:
        return False, f"rejected, form saw username={form_username(r.body)!r}"
    return False, f"{r.status} {first_line(r.body)}"


def first_line(body):
    text = re.sub(rb"<[^>]+>", b" ", body).decode("utf-8", "replace")
    text = " ".join(text.split())
    return (text[:90] + "...") if len(text) > 90 else text


def show(name, app, body_only, user="alice", password="PASSWORD"):
    ctx = Ctx(app, user, password, "CSRFTOKEN" if app == "django" else None)
    v = build(name, ctx)
    if body_only:
        sys.stdout.buffer.write(v["body"])
        return
    print(f"# {name}: {VARIANTS[name][0]}")
    print(f"Content-Type: {v['content_type']}")
    for k, val in v["headers"]:
        print(f"{k}: {val}")
    print()
    body = v["body"]
    if len(body) > 4000:
        body = body[:2000] + b"\n[... %d bytes ...]\n" % (len(body) - 4000) + body[-2000:]
    lines = body.split(b"\n")
    for i, line in enumerate(lines):
        print(repr(line + (b"\n" if i < len(lines) - 1 else b""))[2:-1])


def main():
    ap = argparse.ArgumentParser(description="login-body parser variants")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    s = sub.add_parser("show")
    s.add_argument("variant", choices=VARIANTS)
    s.add_argument("--app", choices=["django", "express"], default="express")
    s.add_argument("--body-only", action="store_true")
    s.add_argument("--user", default="alice")
    s.add_argument("--password", default="PASSWORD")
    s = sub.add_parser("send")
    s.add_argument("variant", choices=VARIANTS)
    s.add_argument("--app", choices=["django", "express"], required=True)
    s.add_argument("--base", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--no-csrf-header", action="store_true")
    s = sub.add_parser("all")
    s.add_argument("--django")
    s.add_argument("--express")
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--no-csrf-header", action="store_true")
    a = ap.parse_args()
    if a.cmd == "list":
        for k, (desc, _) in VARIANTS.items():
            print(f"{k:28} {desc}")
    elif a.cmd == "show":
        show(a.variant, a.app, a.body_only, a.user, a.password)
    elif a.cmd == "send":
        ok, msg = send(a.app, a.base, a.variant, a.user, a.password, not a.no_csrf_header)
        print(msg)
        sys.exit(0 if ok else 1)
    else:
        apps = [(n, b) for n, b in (("django", a.django), ("express", a.express)) if b]
        print("| variant | " + " | ".join(n for n, _ in apps) + " |")
        print("|---|" + "---|" * len(apps))
        for k, (desc, _) in VARIANTS.items():
            cells = []
            for n, b in apps:
                try:
                    ok, msg = send(n, b, k, a.user, a.password, not a.no_csrf_header)
                    cells.append(("**yes** " if ok else "no: ") + msg)
                except Exception as e:  # noqa: BLE001 - report and go on
                    cells.append(f"error: {e!r}")
            print(f"| `{k}` {desc} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
