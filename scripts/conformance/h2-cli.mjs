// The http-cache-tests 0.4.5 client (cli.mjs) with its fetch replaced for CONFORMANCE_TLS=1:
// the package's client uses node-fetch (HTTP/1.1 only); this one uses undici's fetch through an
// Agent that offers h2 by ALPN, and reports the ALPN protocol of every connection at the end, so
// the run shows it really spoke h2. Env: HCT_DIR (the package), UNDICI_DIR (node_modules).
import path from 'node:path'
import diag from 'node:diagnostics_channel'
import { pathToFileURL } from 'node:url'

const hct = (p) => pathToFileURL(path.join(process.env.HCT_DIR, p)).href
const { runTests, getResults } = await import(hct('client/runner.mjs'))
const { default: tests } = await import(hct('tests/index.mjs'))
const { default: surrogate } = await import(hct('tests/surrogate-control.mjs'))
const undici = await import(pathToFileURL(path.join(process.env.UNDICI_DIR, 'undici', 'index.js')).href)

const h2 = process.env.CONFORMANCE_H2 !== '0'
const agent = new undici.Agent({ allowH2: h2, connect: { ALPNProtocols: h2 ? ['h2', 'http/1.1'] : ['http/1.1'] } })
const seen = {}
diag.channel('undici:client:connected').subscribe(({ socket }) => {
  const p = (socket && socket.alpnProtocol) || 'none'
  seen[p] = (seen[p] || 0) + 1
})
// The package's own client (node-fetch) ignores `cache`; WHATWG fetch turns the harness's
// `cache: 'no-store'` into `Pragma`/`Cache-Control: no-cache` request headers (fetch spec,
// HTTP-network-or-cache fetch), which would make every test a revalidation. Drop it, so both
// clients send the same requests.
const fetch = (url, init = {}) => {
  const { cache, ...rest } = init
  return undici.fetch(url, { ...rest, dispatcher: agent })
}

tests.push(surrogate)
const baseUrl = process.env.npm_config_base
await runTests(tests, fetch, false, baseUrl)
console.error(`alpn protocols of the client's connections: ${JSON.stringify(seen)}`)
console.log(JSON.stringify(getResults(), null, 2))
