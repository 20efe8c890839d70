// Drives @automerge/automerge-repo (2.5.x) against a liaison relay, one command per stdin line,
// one JSON result per stdout line. Used by tests/tests/js_interop.rs.
//
//   create <tenant> <team> <kolId>   create an engagement plan, print {"created": id}
//   read <id>                        find a document, print {"doc": ...}
//   edit <id> <title>                set record.title, print {"edited": id}
//   wait <id> <text>                 wait until the document contains text, print {"seen": id}
//
// Liaison records keep short fields (tenant, kind, title...) as scalar strings: in Automerge 3
// JavaScript that is ImmutableString; plain strings become collaborative text (notes).
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import * as A from "@automerge/automerge"
import { ImmutableString } from "@automerge/automerge"
import { createHash, randomBytes } from "node:crypto"
import readline from "node:readline"

const [url] = process.argv.slice(2)
const peerId = process.env.PEER_ID
const tenant = process.env.LIAISON_TENANT
const user = process.env.LIAISON_USER

// liaison's actor scheme (ARCHITECTURE.md): the relay accepts only changes whose actor id starts
// with SHA-256("liaison-actor/v2\0" || len || tenant || len || user || len || device)[..16],
// lengths as 8-byte big-endian integers, followed by 8 random install bytes.
function liaisonActor(tenant, user, device) {
  const h = createHash("sha256")
  h.update(Buffer.from("liaison-actor/v2\0"))
  for (const part of [tenant, user, device]) {
    const bytes = Buffer.from(part, "utf8")
    const len = Buffer.alloc(8)
    len.writeBigUInt64BE(BigInt(bytes.length))
    h.update(len)
    h.update(bytes)
  }
  return Buffer.concat([h.digest().subarray(0, 16), randomBytes(8)]).toString("hex")
}
const actor = liaisonActor(tenant, user, peerId)
// Documents this client found or made change under our actor (automerge-repo picks a random one).
const own = (handle) => handle.update((d) => A.clone(d, { actor }))
const repo = new Repo({ network: [new WebSocketClientAdapter(url)], peerId, sharePolicy: async () => true })
const s = (v) => new ImmutableString(v)
const plain = (doc) =>
  JSON.parse(JSON.stringify(doc, (_k, v) => (v instanceof ImmutableString ? v.toString() : typeof v === "bigint" ? Number(v) : v)))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n")

async function handleLine(line) {
  const [cmd, ...args] = line.trim().split(" ")
  if (cmd === "create") {
    const [tenant, team, kolId] = args
    const initial = A.from({
      schema: 1,
      kind: s("engagement_plan"),
      envelope: {
        tenant: s(tenant),
        team: s(team),
        created_by: { user: s(user), device: s(peerId) },
        created_at: Date.now(),
        retention_class: s("standard"),
        legal_hold: false,
      },
      authors: {},
      record: { kol_id: s(kolId), title: s("plan from javascript"), objectives: [], tactics: [], activities: [], notes: "Written in JavaScript." },
    }, { actor })
    const handle = repo.import(A.save(initial))
    out({ created: handle.documentId })
  } else if (cmd === "read") {
    const handle = await repo.find(args[0])
    out({ doc: plain(handle.doc()) })
  } else if (cmd === "edit") {
    const handle = await repo.find(args[0])
    own(handle)
    handle.change((d) => {
      d.record.title = s(args.slice(1).join(" "))
    })
    out({ edited: args[0] })
  } else if (cmd === "wait") {
    const handle = await repo.find(args[0])
    const text = args.slice(1).join(" ")
    const has = () => JSON.stringify(plain(handle.doc())).includes(text)
    if (!has()) {
      await new Promise((resolve) => {
        const onChange = () => {
          if (has()) {
            handle.off("change", onChange)
            resolve()
          }
        }
        handle.on("change", onChange)
      })
    }
    out({ seen: args[0] })
  } else {
    out({ error: `unknown command ${cmd}` })
  }
}

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  try {
    await handleLine(line)
  } catch (e) {
    out({ error: String(e && e.message ? e.message : e) })
  }
}
await repo.shutdown()
process.exit(0)
