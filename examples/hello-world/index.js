// Hello World: a tiny HTTP server with a health endpoint, shipped by Kubernaut.
'use strict';

const http = require('http');

const port = Number(process.env.PORT || 3000);
const version = process.env.APP_VERSION || 'dev';

const server = http.createServer((request, response) => {
  if (request.url === '/health') {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ status: 'ok', version }));
    return;
  }
  response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(`Hello World from version ${version}\n`);
});

server.listen(port, () => {
  console.log(`hello-world ${version} listening on ${port}`);
});

// Kubernetes sends SIGTERM before it removes a pod: finish in-flight requests first.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
