// node simple.js <endpoint> <topic> <group> <mode> <json options>
// modes:
//   collect     receive + ack until `count` distinct messages (or, with options.ids, until every one of those message
//               ids) or `timeoutMs`; options.tag = filter expression (options.sql: an SQL92 one instead, as
//               FilterExpression(sql, FilterType.SQL)); options.distinctBy = 'body' counts distinct
//               bodies instead of message ids (a producer that retried a send whose reply a crash lost stores the same
//               body twice, under two ids: only one of them was acknowledged)
//   redeliver   receive one, changeInvisibleDuration(1 s), receive it again (attempt + 1), then leave it unacked with a
//               2 s lease that expires, receive it a third time, ack it, check it is gone and that the first
//               (stale) handle is rejected
'use strict';
const { rmq, logger, emit, sleep, view, main, sslEnabled } = require('./lib');
const { FilterType } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');
const [endpoint, topic, group, mode, optJson] = process.argv.slice(2);
const opt = JSON.parse(optJson ?? '{}');

main(async () => {
  const consumer = new rmq.SimpleConsumer({
    endpoints: endpoint, namespace: '', consumerGroup: group,
    subscriptions: new Map().set(topic, opt.sql ? new rmq.FilterExpression(opt.sql, FilterType.SQL) : (opt.tag ?? '*')),
    awaitDuration: opt.awaitMs ?? 3000, logger, sslEnabled,
  });
  await consumer.startup();
  emit({ started: true });
  const got = [];
  if (mode === 'collect') {
    const until = Date.now() + (opt.timeoutMs ?? 15000);
    const distinct = new Set();
    const done = () => opt.ids ? opt.ids.every(id => distinct.has(id)) : distinct.size >= (opt.count ?? 1);
    while (!done() && Date.now() < until) {
      let batch;
      try {
        batch = await consumer.receive(opt.batch ?? 16, opt.invisibleMs ?? 30000);
      } catch (e) {
        emit({ receiveError: String(e.message ?? e) });
        await sleep(500);
        continue;
      }
      for (const m of batch) {
        got.push(view(m));
        distinct.add(opt.distinctBy === 'body' ? got[got.length - 1].body : m.messageId);
        if (!opt.noAck) {
          for (;;) {
            try { await consumer.ack(m); break; } catch (e) {
              const text = String(e.message ?? e);
              emit({ ackError: text });
              // INVALID_RECEIPT_HANDLE (40013): the lease is gone (e.g. the broker restarted before the lease was durable);
              // the message comes back by itself, so stop retrying this handle, as the official push consumer does.
              if (text.includes('40013') || Date.now() > until) break;
              await sleep(300);
            }
          }
        }
      }
    }
  } else if (mode === 'redeliver') {
    const receiveOne = async (invisibleMs, timeoutMs) => {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const batch = await consumer.receive(1, invisibleMs);
        if (batch.length > 0) return batch[0];
      }
      throw new Error('no message within ' + timeoutMs + ' ms');
    };
    const first = await receiveOne(30000, 10000);
    got.push(view(first));
    await consumer.changeInvisibleDuration(first, 1000);
    // a 2 s lease that simply expires
    const second = await receiveOne(2000, 10000);
    got.push(view(second));
    const third = await receiveOne(30000, 10000);
    got.push(view(third));
    await consumer.ack(third);
    const after = await consumer.receive(1, 1000);
    emit({ afterAck: after.length });
    let staleAck = 'ok';
    try { await consumer.ack(first); } catch (e) { staleAck = String(e.message ?? e); }
    emit({ staleAck });
  }
  emit({ result: 'done', got });
  await consumer.shutdown();
});
