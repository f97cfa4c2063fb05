'use strict';
// ws_server.js: the Node `ws` peer of the kestrun broadcast fan-out benchmark.
//
//   node ws_server.js [--host 127.0.0.1] [--port P|0] [--port-file F] [--hwm 65536] [--burst 1]
//
// Accepts plain WebSocket clients on any path and broadcasts, when told by GET /start (see
// common.js for the control routes and the exact loop policy), the same bytes kestrun sends for
// kr.send_event("tick", {n=i, t=µs}): a SignalR JSON invocation record
//   {"type":1,"target":"ReceiveEvent","arguments":[{"eventName":"tick","data":{"n":i,"t":µs},
//    "timestamp":"…Z"}]}\x1e
// in one text frame, so the frame size matches. The send is the idiomatic one: the message is
// built once as a string and `for (const c of wss.clients) c.send(msg)` (ws frames and copies it
// for each client), skipping clients that are not open or are backpressured (bufferedAmount ≥ hwm).
// ws's per-message compression is off (its default); bufferutil is installed, as ws recommends.
const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');
const { options, eventArg, announce, control, exitOnSignals } = require('./common');

const o = options('ws_server.js');
const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });

function broadcast(n, t) {
  const msg = JSON.stringify({ type: 1, target: 'ReceiveEvent', arguments: [eventArg(n, t)] }) + '\x1e';
  let skipped = 0;
  for (const c of wss.clients) {
    if (c.readyState === WebSocket.OPEN && c.bufferedAmount < o.hwm) c.send(msg);
    else skipped++;
  }
  return skipped;
}

wss.on('connection', (c) => c.on('error', () => {}));
server.on('request', control(o, broadcast, () => wss.clients.size));
server.listen(o.port, o.host, () => announce(server, o));
exitOnSignals();
