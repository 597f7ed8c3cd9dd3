// node produce.js <endpoint> <topic> <json spec>
// spec: { count, tag?, tags?: [..] (cycled), groups?: [..] (FIFO, cycled), props?: [{..}] (user properties, cycled),
//         delayMs?, prefix?, intervalMs?, retryForMs? }
'use strict';
const { rmq, logger, emit, sleep, main } = require('./lib');
const [endpoint, topic, specJson] = process.argv.slice(2);
const spec = JSON.parse(specJson ?? '{}');

main(async () => {
  const producer = new rmq.Producer({ endpoints: endpoint, namespace: '', topics: [topic], logger });
  await producer.startup();
  const sent = [];
  for (let i = 0; i < (spec.count ?? 1); i++) {
    const msg = { topic, body: Buffer.from(`${spec.prefix ?? 'm'}-${i}`) };
    if (spec.tag) msg.tag = spec.tag;
    if (spec.tags) msg.tag = spec.tags[i % spec.tags.length];
    if (spec.groups) msg.messageGroup = spec.groups[i % spec.groups.length];
    if (spec.props) msg.properties = new Map(Object.entries(spec.props[i % spec.props.length]));
    if (spec.delayMs) msg.delay = spec.delayMs;
    const until = Date.now() + (spec.retryForMs ?? 0);
    for (;;) {
      try {
        const r = await producer.send(msg);
        sent.push({ id: r.messageId, body: msg.body.toString(), tag: msg.tag ?? null, group: msg.messageGroup ?? null, sentMs: Date.now() });
        emit({ sent: r.messageId, i });
        break;
      } catch (e) {
        if (Date.now() > until) throw e;
        emit({ retry: i, error: String(e.message ?? e) });
        await sleep(300);
      }
    }
    if (spec.intervalMs) await sleep(spec.intervalMs);
  }
  emit({ result: 'done', sent });
  await producer.shutdown();
});
