'use strict';
// sio_server.js: the Socket.IO peer of the kestrun broadcast fan-out benchmark.
//
//   node sio_server.js [--host 127.0.0.1] [--port P|0] [--port-file F] [--hwm 65536] [--burst 1]
//
// A default Socket.IO 4 server (default engine, Engine.IO v4, both transports allowed; the load
// generator connects with transport=websocket directly) on the default namespace "/". When told
// by GET /start (see common.js for the control routes and the exact loop policy) it broadcasts
//   io.emit("ReceiveEvent", {eventName: "tick", data: {n, t: µs}, timestamp: "…Z"})
// which reaches each client as one text frame 42["ReceiveEvent",{…}] (Socket.IO encodes a
// broadcast once and, since 4.7, pre-computes the WebSocket frame for all recipients).
// Socket.IO has no backpressure API, so before each emit the loop lists the sockets whose backlog
// (Engine.IO write buffer + the ws socket's bufferedAmount) is at or over --hwm bytes and
// leaves them out with io.except(ids); normally the list is empty and this is a plain io.emit.
const http = require('node:http');
const { Server } = require('socket.io');
const { options, eventArg, announce, control, exitOnSignals } = require('./common');

const o = options('sio_server.js');
// The control routes first: Socket.IO, attached next, keeps /socket.io/ and hands every other
// request to the listeners that were there before it.
const server = http.createServer((req, res) => handle(req, res));
const io = new Server(server, { serveClient: false });
const sockets = io.of('/').sockets;
const MSG_BYTES = 140; // approximate size of one queued packet, to turn a packet count into bytes

function backlog(s) {
  const conn = s.conn;
  const ws = conn.transport && conn.transport.socket;
  return conn.writeBuffer.length * MSG_BYTES + ((ws && ws.bufferedAmount) || 0);
}

function broadcast(n, t) {
  let skip = null;
  for (const [id, s] of sockets) if (backlog(s) >= o.hwm) (skip ||= []).push(id);
  (skip ? io.except(skip) : io).emit('ReceiveEvent', eventArg(n, t));
  return skip ? skip.length : 0;
}

const handle = control(o, broadcast, () => sockets.size);
server.listen(o.port, o.host, () => announce(server, o));
exitOnSignals();
