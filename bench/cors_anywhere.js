// cors-anywhere for bench/run.py, optionally with a keep-alive agent towards the upstream.
//   node bench/cors_anywhere.js PORT [--keepalive]
// As shipped, http-proxy opens a new upstream connection per request (agent: false,
// "Connection: close"); --keepalive passes a pooled agent instead.
const http = require('http');
const corsAnywhere = require('cors-anywhere');

const port = parseInt(process.argv[2], 10);
const keepAlive = process.argv.includes('--keepalive');
const options = {};
if (keepAlive) {
  options.httpProxyOptions = { agent: new http.Agent({ keepAlive: true, maxSockets: 256 }) };
}
corsAnywhere.createServer(options).listen(port, '127.0.0.1', () => {
  console.log(`cors-anywhere on 127.0.0.1:${port} keepAlive=${keepAlive}`);
});
