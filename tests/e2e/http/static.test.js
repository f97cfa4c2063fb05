'use strict';
// kr.static: content types, validators and 304, HEAD, ranges, no path escape, large files.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, request, rawRequest, parseAll, firstStatus, tempDir, luaString, assertCommonHeaders } = require('../lib/server');

// a 1x1 PNG
const PNG = Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010806000000' +
  '1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082', 'hex');
const FILES = {
  'index.html': '<!doctype html><title>t</title><p>hello static</p>\n',
  'style.css': 'body { color: red; }\n',
  'app.js': 'console.log("hi");\n',
  'data.json': '{"k":"v"}\n',
  'sub/nested.txt': 'nested file\n',
  'a/b': 'file a/b\n',
  'hello.txt': '0123456789abcdef',
};
const SECRET = 'TOP-SECRET-CONTENT-5531\n';

let srv;
let root;
let big;
before(async () => {
  const dir = tempDir();
  root = path.join(dir, 'www');
  fs.mkdirSync(root);
  for (const [name, text] of Object.entries(FILES)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  }
  fs.writeFileSync(path.join(root, 'img.png'), PNG);
  big = crypto.randomBytes(1 << 20);
  fs.writeFileSync(path.join(root, 'big.bin'), big);
  fs.writeFileSync(path.join(dir, 'secret.txt'), SECRET);
  fs.symlinkSync(path.join(dir, 'secret.txt'), path.join(root, 'link.txt'));
  fs.symlinkSync('../secret.txt', path.join(root, 'rel-link.txt'));
  srv = await startServer({
    script: `kr.static("/static", ${luaString(root)})\n` +
      'kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)\n',
  });
});
after(async () => { if (srv) await srv.stop(); });

const get = (p, headers = {}) => request(srv.port, { path: p, headers });

test('serves files with their content types', async () => {
  const cases = [
    ['/static/index.html', /^text\/html\b/, FILES['index.html']],
    ['/static/style.css', /^text\/css\b/, FILES['style.css']],
    ['/static/app.js', /^(text|application)\/javascript\b/, FILES['app.js']],
    ['/static/data.json', /^application\/json\b/, FILES['data.json']],
    ['/static/sub/nested.txt', /^text\/plain\b/, FILES['sub/nested.txt']],
  ];
  for (const [p, ct, bodyText] of cases) {
    const r = await get(p);
    assert.equal(r.status, 200, p);
    assert.match(r.headers['content-type'] || '', ct, `${p}: ${r.headers['content-type']}`);
    assert.equal(r.body, bodyText, p);
    assert.equal(r.headers['content-length'], String(Buffer.byteLength(bodyText)), p);
    assertCommonHeaders(r.headers, p);
  }
  const png = await get('/static/img.png');
  assert.equal(png.status, 200);
  assert.equal(png.headers['content-type'], 'image/png');
  assert.ok(png.bodyBuf.equals(PNG));
});

test('unknown file: 404', async () => {
  assert.equal((await get('/static/nope.txt')).status, 404);
  assert.equal((await get('/static/sub/nope')).status, 404);
});

test('ETag and If-None-Match: 304', async () => {
  const r = await get('/static/style.css');
  const etag = r.headers.etag;
  assert.ok(etag, 'has an ETag');
  assert.match(etag, /^(W\/)?"[^"]+"$/);
  const r2 = await get('/static/style.css', { 'If-None-Match': etag });
  assert.equal(r2.status, 304);
  assert.equal(r2.body, '');
  assert.equal(r2.headers.etag, etag);
  assertCommonHeaders(r2.headers, 'on 304');
  const r3 = await get('/static/style.css', { 'If-None-Match': '"something-else"' });
  assert.equal(r3.status, 200);
  assert.equal(r3.body, FILES['style.css']);
  const r4 = await get('/static/style.css', { 'If-None-Match': `"x", ${etag}` });
  assert.equal(r4.status, 304);
});

test('Last-Modified and If-Modified-Since: 304', async () => {
  const r = await get('/static/app.js');
  const lm = r.headers['last-modified'];
  assert.ok(lm, 'has Last-Modified');
  assert.ok(!Number.isNaN(Date.parse(lm)));
  const r2 = await get('/static/app.js', { 'If-Modified-Since': lm });
  assert.equal(r2.status, 304);
  assert.equal(r2.body, '');
  const old = new Date(Date.parse(lm) - 3600e3).toUTCString();
  const r3 = await get('/static/app.js', { 'If-Modified-Since': old });
  assert.equal(r3.status, 200);
  assert.equal(r3.body, FILES['app.js']);
});

test('HEAD: headers without a body', async () => {
  const g = await get('/static/index.html');
  const h = await request(srv.port, { method: 'HEAD', path: '/static/index.html' });
  assert.equal(h.status, 200);
  assert.equal(h.body, '');
  assert.equal(h.headers['content-length'], g.headers['content-length']);
  assert.equal(h.headers['content-type'], g.headers['content-type']);
  assert.equal(h.headers.etag, g.headers.etag);
  // on the wire: no body bytes before the next response
  const raw = await rawRequest(srv.port,
    'HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const rs = parseAll(raw.data, ['HEAD', 'GET']);
  assert.equal(rs.length, 2);
  assert.equal(rs[0].headers['content-length'], String(1 << 20));
  assert.equal(rs[1].text, 'hi');
});

test('Range bytes=0-4: 206 with Content-Range', async () => {
  const r = await get('/static/hello.txt', { Range: 'bytes=0-4' });
  assert.equal(r.status, 206);
  assert.equal(r.body, '01234');
  assert.equal(r.headers['content-range'], 'bytes 0-4/16');
  assert.equal(r.headers['content-length'], '5');
});

test('Range: middle, open-ended and suffix ranges', async () => {
  const m = await get('/static/hello.txt', { Range: 'bytes=10-12' });
  assert.equal(m.status, 206);
  assert.equal(m.body, 'abc');
  assert.equal(m.headers['content-range'], 'bytes 10-12/16');
  const o = await get('/static/hello.txt', { Range: 'bytes=12-' });
  assert.equal(o.status, 206);
  assert.equal(o.body, 'cdef');
  const s = await get('/static/hello.txt', { Range: 'bytes=-3' });
  assert.equal(s.status, 206);
  assert.equal(s.body, 'def');
  assert.equal(s.headers['content-range'], 'bytes 13-15/16');
  const past = await get('/static/hello.txt', { Range: 'bytes=10-999' });
  assert.equal(past.status, 206);
  assert.equal(past.body, 'abcdef');
  assert.equal(past.headers['content-range'], 'bytes 10-15/16');
});

test('unsatisfiable Range: 416', async () => {
  const r = await get('/static/hello.txt', { Range: 'bytes=100-200' });
  assert.equal(r.status, 416);
  assert.equal(r.headers['content-range'], 'bytes */16');
});

test('path traversal is not served', async () => {
  const attempts = [
    '/static/../secret.txt',
    '/static/%2e%2e/secret.txt',
    '/static/%2E%2E/secret.txt',
    '/static/..%2fsecret.txt',
    '/static/..%2Fsecret.txt',
    '/static/sub/../../secret.txt',
    '/static/sub/%2e%2e/%2e%2e/secret.txt',
    '/static/..\\secret.txt',
    '/static/%2e%2e%5csecret.txt',
    '/static//etc/passwd',
    '/static/a%2Fb',
    '/static/hello.txt%00.png',
  ];
  for (const p of attempts) {
    const raw = await rawRequest(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const st = firstStatus(raw.data);
    const text = raw.data.toString('latin1');
    assert.ok(st === 404 || st === 400, `${p}: status ${st}`);
    assert.ok(!text.includes('TOP-SECRET'), `${p} leaked the secret`);
    assert.ok(!text.includes('root:'), `${p} leaked /etc/passwd`);
    assert.ok(!text.includes('file a/b'), `${p} decoded %2F into a path separator`);
  }
  // the server is fine afterwards
  assert.equal((await get('/hello')).body, 'hi');
});

test('a symlink pointing outside the directory: 404', async () => {
  const r = await get('/static/link.txt');
  assert.equal(r.status, 404);
  assert.ok(!r.body.includes('TOP-SECRET'));
  const r2 = await get('/static/rel-link.txt');
  assert.equal(r2.status, 404);
  assert.ok(!r2.body.includes('TOP-SECRET'));
});

test('a 1 MiB file arrives intact', async () => {
  const r = await get('/static/big.bin');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], String(1 << 20));
  assert.equal(r.bodyBuf.length, 1 << 20);
  assert.ok(r.bodyBuf.equals(big), 'same bytes');
});

test('a Range inside the large file', async () => {
  const r = await get('/static/big.bin', { Range: 'bytes=1000000-1000099' });
  assert.equal(r.status, 206);
  assert.ok(r.bodyBuf.equals(big.subarray(1000000, 1000100)));
});

test('POST to a static file is not served as the file', async () => {
  const r = await request(srv.port, { method: 'POST', path: '/static/hello.txt', body: 'x' });
  assert.ok(r.status === 405 || r.status === 404, `status ${r.status}`);
});
