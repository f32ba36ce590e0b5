// A js-libp2p peer for the interop test (tests/node/test_js_peer.py): joins the ICN nodes'
// gossip with the same message ids (SHA-256 of the data), reports what it receives, publishes
// what it is told, and reports the gossip score it gives each peer.
//
//   node peer.mjs '{"bootstrap": [MULTIADDR...], "topics": [TOPIC...], "heartbeat_ms": 250, "mesh": true}'
//
// stdout: one JSON object a line ({"event": "up" | "message" | "published" | "scores" | "error"});
// stdin:  one JSON command a line ({"cmd": "publish", "topic", "data": HEX} | {"cmd": "scores"} | {"cmd": "stop"}).
import './polyfill.mjs'
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const config = JSON.parse(process.argv[2])
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      msgIdFn: (msg) => createHash('sha256').update(msg.data).digest(),
      heartbeatInterval: config.heartbeat_ms ?? 1000,
      // "mesh": false keeps this peer out of every mesh (it prunes whoever grafts it), so all it
      // receives comes by gossip repair: the IHAVE the nodes send and the IWANT it answers with
      ...(config.mesh === false ? { D: 0, Dlo: 0, Dhi: 0, Dout: 0, Dscore: 0, Dlazy: 6 } : {}),
      allowPublishToZeroTopicPeers: true,
      emitSelf: false
    })
  }
})
const pubsub = node.services.pubsub

pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  say({ event: 'message', topic: msg.topic, data: hex(msg.data), from: msg.from?.toString() })
})
for (const topic of config.topics) pubsub.subscribe(topic)
for (const addr of config.bootstrap) {
  try {
    await node.dial(multiaddr(addr))
  } catch (err) {
    say({ event: 'error', what: `dial ${addr}`, error: String(err) })
  }
}
say({ event: 'up', peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

const commands = createInterface({ input: process.stdin })
for await (const line of commands) {
  const cmd = JSON.parse(line)
  if (cmd.cmd === 'publish') {
    try {
      const result = await pubsub.publish(cmd.topic, Buffer.from(cmd.data, 'hex'))
      say({ event: 'published', recipients: result.recipients.map(String) })
    } catch (err) {
      say({ event: 'error', what: 'publish', error: String(err) })
    }
  } else if (cmd.cmd === 'scores') {
    const scores = {}
    for (const peer of pubsub.getPeers()) scores[peer.toString()] = pubsub.getScore(peer.toString())
    const mesh = {}
    for (const topic of config.topics) mesh[topic] = pubsub.getMeshPeers(topic)
    say({ event: 'scores', scores, mesh })
  } else if (cmd.cmd === 'stop') {
    break
  }
}
await node.stop()
process.exit(0)
