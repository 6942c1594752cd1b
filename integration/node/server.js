#!/usr/bin/env node
// An independent LwM2M server (Telefonica's lwm2m-node-lib, on node-coap)
// for integration/lwm2m_interop_test.go: the gateway forwards devices to it.
//
//   node integration/node/server.js PORT [--split-location-path]
//
// Listens on 127.0.0.1:PORT (plain CoAP over UDP) and prints one JSON object
// per line on stdout:
//
//   {"event":"listening","port":N}
//   {"event":"request","method":..,"url":..,"address":..,"port":..}  (every request received)
//   {"event":"registration","endpoint":..,"lifetime":..,"version":..,"binding":..,
//    "payload":..,"id":..,"address":..,"port":..}
//   {"event":"update","endpoint":..,"id":..,"lifetime":..,"payload":..,"address":..,"port":..}
//   {"event":"unregistration","endpoint":..,"id":..,"reason":"deregister"|"lifetime"}
//   {"event":"read","req":..,"endpoint":..,"path":..,"value":..}        (or "error":..)
//   {"event":"error","error":..}
//
// Commands, one JSON object per line on stdin:
//
//   {"req":"r1","op":"read","endpoint":"urn:dev:x","path":"/3/0/0"}
//
// The library's own logs go to stderr. It exits when stdin closes, so it
// never outlives the test that started it.
'use strict';

const dgram = require('dgram');
const readline = require('readline');

// Loopback only. lwm2m-node-lib calls server.listen(port) without an address
// (node-coap then binds every interface), and its Read goes out through a
// node-coap Agent whose socket is bound implicitly to every interface. Both
// are pinned to 127.0.0.1 here; nothing else of the library is changed.
const CoapServer = require('coap/lib/server');
const listen = CoapServer.prototype.listen;
CoapServer.prototype.listen = function (port, address, done) {
  if (typeof address === 'function' || address == null) {
    done = typeof address === 'function' ? address : done;
    address = '127.0.0.1';
  }
  return listen.call(this, port, address, done);
};
const Agent = require('coap/lib/agent');
const agentInit = Agent.prototype._init;
Agent.prototype._init = function (socket) {
  if (!socket && !this._sock) {
    const type = this._opts.type || 'udp4';
    socket = dgram.createSocket(type);
    socket.bind(0, type === 'udp6' ? '::1' : '127.0.0.1');
  }
  return agentInit.call(this, socket);
};

// lwm2m-node-lib 1.4.0 answers a Register with ONE Location-Path option
// "rd/<id>" (lib/services/server/registration.js), where RFC 7252 §5.10.7
// wants one option per segment ("rd", "<id>"). With --split-location-path
// (and only then) node-coap's setOption splits a Location-Path string at '/'
// into one option per segment, as other LwM2M servers send it. Without the
// flag the library is used exactly as published.
if (process.argv.includes('--split-location-path')) {
  const OutgoingMessage = require('coap/lib/outgoing_message');
  const setOption = OutgoingMessage.prototype.setOption;
  OutgoingMessage.prototype.setOption = function (name, values) {
    if (String(name).toLowerCase() === 'location-path' && typeof values === 'string') {
      values = values.split('/').filter((seg) => seg !== '');
    }
    return setOption.call(this, name, values);
  };
}

const logger = require('logops');
logger.setStream(process.stderr);

const lwm2m = require('lwm2m-node-lib').server;

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: node server.js PORT\n');
  process.exit(2);
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function deviceInfo(endpoint, cb) {
  lwm2m.getDevice(endpoint, (err, dev) => cb(err ? null : dev));
}

const config = {
  port: port,
  serverProtocol: 'udp4',
  defaultType: 'Device',
  types: [],
  logLevel: process.env.LWM2M_NODE_LOG || 'FATAL',
  deviceRegistry: { type: 'memory' },
  lifetimeCheckInterval: 1000,
  udpWindow: 100,
};

lwm2m.start(config, (err, serverInfo) => {
  if (err) {
    emit({ event: 'error', error: 'start: ' + String(err && err.message || err) });
    process.exit(1);
  }

  // Every request the CoAP server hands to the library, before routing.
  serverInfo.server.on('request', (req) => {
    emit({ event: 'request', method: req.method, url: req.url, address: req.rsinfo.address, port: req.rsinfo.port });
  });

  // registration: fn(endpoint, lifetime, version, binding, payload, callback)
  // (the README lists five arguments; lib/services/server/registration.js
  // passes the Register payload too). The device is stored before the
  // handler runs, so its id and source address are known here.
  lwm2m.setHandler(serverInfo, 'registration', (endpoint, lifetime, version, binding, payload, callback) => {
    deviceInfo(endpoint, (dev) => {
      emit({
        event: 'registration', endpoint, lifetime, version, binding, payload,
        id: dev && dev.id, address: dev && dev.address, port: dev && dev.port,
      });
      callback();
    });
  });
  // updateRegistration: fn(device, payload, callback)
  lwm2m.setHandler(serverInfo, 'updateRegistration', (dev, payload, callback) => {
    emit({
      event: 'update', endpoint: dev.name, id: dev.id, lifetime: dev.lifetime,
      payload, address: dev.address, port: dev.port,
    });
    callback();
  });
  // unregistration: fn(device, callback)
  lwm2m.setHandler(serverInfo, 'unregistration', (dev, callback) => {
    emit({ event: 'unregistration', endpoint: dev.name, id: dev.id, reason: 'deregister' });
    callback();
  });
  // setHandler('unregistration') restarts the lifetime check with an
  // undefined interval (a 1 ms timer) and the same handler; restart it with
  // 1 s and a handler that says why the registration went away.
  lwm2m.getRegistry().checkLifetime(config.lifetimeCheckInterval, (dev, callback) => {
    emit({ event: 'unregistration', endpoint: dev.name, id: dev.id, reason: 'lifetime' });
    callback();
  });

  emit({ event: 'listening', port });
});

function handle(cmd) {
  if (cmd.op !== 'read') {
    emit({ event: 'error', req: cmd.req, error: 'unknown op ' + JSON.stringify(cmd.op) });
    return;
  }
  const reply = (fields) => emit(Object.assign({ event: 'read', req: cmd.req, endpoint: cmd.endpoint, path: cmd.path }, fields));
  const seg = String(cmd.path || '').split('/').filter((s) => s !== '');
  if (seg.length !== 3) {
    reply({ error: 'path must be /object/instance/resource' });
    return;
  }
  deviceInfo(cmd.endpoint, (dev) => {
    if (!dev) {
      reply({ error: 'not registered' });
      return;
    }
    lwm2m.read(dev.id, seg[0], seg[1], seg[2], (err, value) => {
      if (err) {
        reply({ error: String(err.name || '') + ': ' + String(err.message || err) });
      } else {
        reply({ value });
      }
    });
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ event: 'error', error: 'bad command: ' + e.message });
    return;
  }
  handle(cmd);
});
rl.on('close', () => process.exit(0));
process.on('uncaughtException', (e) => {
  emit({ event: 'error', error: 'uncaught: ' + (e && e.stack || e) });
  process.exit(1);
});
