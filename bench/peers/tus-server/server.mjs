// The peer of `herald-loadgen uploads`: @tus/server 2.4.5 with
// @tus/file-store, as its README sets them up, on 127.0.0.1.
//
//   node server.mjs <port> <directory>
//
// tus is served at /v2/uploads, Herald's path, so the load generator's
// requests are the same for both; `GET /v2/uploads/<id>/content` (Herald's
// download path) is handed to @tus/server's own GET of the upload. Prints
// `listening <port>` once it accepts connections.
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
if (!port || !directory) {
  console.error('usage: node server.mjs <port> <directory>');
  process.exit(2);
}

const tus = new Server({
  path: '/v2/uploads',
  datastore: new FileStore({ directory }),
  maxSize: 100 * 1024 * 1024,
});

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.endsWith('/content')) {
    req.url = req.url.slice(0, -'/content'.length);
  }
  tus.handle(req, res);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`listening ${port}`));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
