// Sends log lines with winston + winston-loki (snappy-compressed protobuf, as the package
// does by default) to a Loki push endpoint, then waits until they are flushed.
// usage: node winston-loki-send.js URL TENANT COUNT
const winston = require('winston')
const LokiTransport = require('winston-loki')

const [url, tenant, count] = process.argv.slice(2)
let failed = null
const transport = new LokiTransport({
  host: url,
  labels: { app: 'node-app', env: 'test' },
  json: false,
  batching: true,
  interval: 0.2,
  headers: { 'X-Scope-OrgID': tenant },
  replaceTimestamp: false,
  onConnectionError: (err) => { failed = err }
})
const logger = winston.createLogger({ transports: [transport] })
for (let i = 0; i < Number(count); i++) {
  logger.log({ level: i % 2 ? 'warn' : 'info', message: `node line ${i}`, labels: { worker: `w${i % 3}` } })
}
transport.flush().then(() => {
  logger.close()
  if (failed) {
    console.error('send failed:', failed)
    process.exit(1)
  }
  console.log(JSON.stringify({ sent: Number(count) }))
  process.exit(0)
})
