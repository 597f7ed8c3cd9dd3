// Shared helpers for the compatibility scripts. Each script prints JSON lines on stdout; the last one is the result.
'use strict';
const path = require('node:path');
const rmq = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

// Client logs go to stderr (captured by the test on failure) instead of ~/logs.
const logger = {
  info: (...a) => console.error('[info]', ...a),
  warn: (...a) => console.error('[warn]', ...a),
  error: (...a) => console.error('[error]', ...a),
  debug: () => {},
};

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

// HALFMSG_NODE_SSL=1: the client's sslEnabled option (TLS to the broker's gRPC port; the client verifies the certificate
// against grpc-js's roots, so the test names its certificate in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
const sslEnabled = process.env.HALFMSG_NODE_SSL === '1';

function view(m) {
  return {
    id: m.messageId,
    body: m.body.toString('utf8'),
    tag: m.tag ?? null,
    group: m.messageGroup ?? null,
    attempt: m.deliveryAttempt ?? null,
    // The broker's receipt handle (v1.<queue>.<offset>.<lease>): which queue a message came from, for order checks.
    handle: m.receiptHandle ?? null,
    topic: m.topic,
    corrupted: !!m.corrupted,
    bornMs: m.bornTimestamp ? m.bornTimestamp.getTime() : null,
    deliveryMs: m.deliveryTimestamp ? m.deliveryTimestamp.getTime() : null,
    receivedMs: Date.now(),
  };
}

async function main(fn) {
  try {
    await fn();
    process.exit(0);
  } catch (e) {
    emit({ error: String(e && e.stack || e) });
    process.exit(1);
  }
}

module.exports = { rmq, TransactionResolution, logger, emit, sleep, view, main, path, sslEnabled };
