// node namespace.js <endpoint> <topic> <group> <nsA> <nsB> [waitMs]
// Two tenants use the same topic and group names, each with its own namespace. In each: a transaction committed by
// the producer; in A also one left undecided, which the broker checks back and A's checker commits. Then a simple
// consumer per namespace collects what it gets. Prints the checks each checker saw and each consumer's messages.
'use strict';
const { rmq, TransactionResolution, logger, emit, sleep, view, main } = require('./lib');
const [endpoint, topic, group, nsA, nsB, waitArg] = process.argv.slice(2);
const waitMs = Number(waitArg ?? 20000);

function tenant(namespace) {
  const checks = [];
  const checker = {
    async check(messageView) {
      checks.push(view(messageView));
      emit({ namespace, check: messageView.messageId });
      return TransactionResolution.COMMIT;
    },
  };
  const producer = new rmq.Producer({ endpoints: endpoint, namespace, topics: [topic], checker, logger });
  return { namespace, producer, checks };
}

async function collect(namespace, expected, timeoutMs) {
  const consumer = new rmq.SimpleConsumer({
    endpoints: endpoint, namespace, consumerGroup: group,
    subscriptions: new Map().set(topic, '*'), awaitDuration: 2000, logger,
  });
  await consumer.startup();
  const got = [];
  const until = Date.now() + timeoutMs;
  while (got.length < expected && Date.now() < until) {
    for (const m of await consumer.receive(16, 30000)) {
      got.push(view(m));
      await consumer.ack(m);
    }
  }
  // A last look: anything more (a message of the other tenant) would show here.
  for (const m of await consumer.receive(16, 30000)) {
    got.push(view(m));
    await consumer.ack(m);
  }
  await consumer.shutdown();
  return got;
}

main(async () => {
  const a = tenant(nsA);
  const b = tenant(nsB);
  await a.producer.startup();
  await b.producer.startup();
  emit({ started: true });

  const send = async (t, body) => {
    const tx = t.producer.beginTransaction();
    const receipt = await t.producer.send({ topic, tag: 'ns', body: Buffer.from(body) }, tx);
    return { tx, id: receipt.messageId };
  };
  const committedA = await send(a, 'a-commit');
  await committedA.tx.commit();
  const committedB = await send(b, 'b-commit');
  await committedB.tx.commit();
  const undecided = await send(a, 'a-checked'); // no decision: the broker must ask A, not B
  const until = Date.now() + waitMs;
  while (Date.now() < until && a.checks.length === 0) await sleep(100);
  await sleep(500); // let the EndTransaction go out

  const gotA = await collect(nsA, 2, 10000);
  const gotB = await collect(nsB, 1, 10000);
  emit({ result: 'done', ids: { aCommit: committedA.id, aChecked: undecided.id, bCommit: committedB.id },
    checksA: a.checks, checksB: b.checks, gotA, gotB });
  await a.producer.shutdown();
  await b.producer.shutdown();
});
