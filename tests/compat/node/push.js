// node push.js <endpoint> <topic> <group> <mode> <json options>
// modes: ok | fail-first (first attempt of each message fails) | always-fail (runs for options.runMs)
//        | slow (each attempt takes options.sleepMs before it succeeds: longer than the lease, so the broker must renew it)
// Stops when `count` distinct messages were consumed successfully or after runMs.
'use strict';
const { rmq, logger, emit, sleep, view, main } = require('./lib');
const [endpoint, topic, group, mode, optJson] = process.argv.slice(2);
const opt = JSON.parse(optJson ?? '{}');

main(async () => {
  const attempts = [];
  const done = new Map();
  const consumer = new rmq.PushConsumer({
    endpoints: endpoint, namespace: '', consumerGroup: group,
    subscriptions: new Map([[topic, opt.tag ?? '*']]), logger,
    messageListener: {
      async consume(m) {
        const v = view(m);
        attempts.push(v);
        emit({ attempt: v.attempt, id: v.id });
        const fail = mode === 'always-fail' || (mode === 'fail-first' && (m.deliveryAttempt ?? 1) === 1);
        if (fail) return rmq.ConsumeResult.FAILURE;
        if (mode === 'slow') await sleep(opt.sleepMs ?? 0);
        v.endMs = Date.now(); // with receivedMs, when the listener ran: tests check that calls did not overlap
        if (!done.has(v.id)) done.set(v.id, v);
        return rmq.ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  emit({ started: true });
  const until = Date.now() + (opt.runMs ?? 20000);
  while (Date.now() < until && (mode === 'always-fail' || done.size < (opt.count ?? 1))) await sleep(100);
  await sleep(opt.settleMs ?? 500); // let the last acks go out
  emit({ result: 'done', consumed: [...done.values()], attempts });
  await consumer.shutdown();
});
