// The Node peer of the benchmark: an automerge-repo 2.5 sync server, as in automerge-repo's
// sync-server example: a WebSocket server adapter, node filesystem storage, and a share policy
// that announces nothing (it answers what clients ask). Plain ws, or wss with --cert/--key.
// Usage: node server.mjs --data DIR [--port 0] [--cert PEM --key PEM]
// Prints "node relay listening on ws(s)://127.0.0.1:PORT/" once serving.
import fs from "node:fs"
import http from "node:http"
import https from "node:https"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const args = process.argv.slice(2)
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : dflt
}
const data = arg("data")
if (!data) {
  console.error("usage: node server.mjs --data DIR [--port N] [--cert PEM --key PEM]")
  process.exit(2)
}
fs.mkdirSync(data, { recursive: true })
const cert = arg("cert")
const key = arg("key")
const server = cert
  ? https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) })
  : http.createServer((_req, res) => res.end("automerge-repo sync server\n"))
const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 })
server.on("upgrade", (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, ws => wss.emit("connection", ws, req))
})

new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(data),
  peerId: "node-relay",
  sharePolicy: async () => false,
})

server.listen(Number(arg("port", "0")), "127.0.0.1", () => {
  const { port } = server.address()
  console.log(`node relay listening on ${cert ? "wss" : "ws"}://127.0.0.1:${port}/`)
})
const stop = () => {
  wss.close()
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
