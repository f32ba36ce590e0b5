// Node 20 (Debian's, and this project's CI) lacks Promise.withResolvers (Node 22), which
// js-libp2p 3's queues call; imported first by peer.mjs, so it is in place before they load.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
