// Preloaded (node --require) into the http-cache-tests origin server, whose server.mjs calls
// `server.listen(port)` with no host and so would listen on every address. This makes any
// listen(port[, backlog][, cb]) without a host bind 127.0.0.1 only.
'use strict'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const first = args[0]
  const isPort = typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))
  if (isPort && typeof args[1] !== 'string') {
    args[0] = Number(first)
    args.splice(1, 0, '127.0.0.1')
  }
  return listen.apply(this, args)
}
