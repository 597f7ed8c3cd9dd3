// node tx.js <endpoint> <topic> <mode> [waitMs]
// modes: commit | rollback | check-commit | check-rollback | check-unknown-then-commit | orphan | checker-commit
'use strict';
const { rmq, TransactionResolution, logger, emit, sleep, view, main, sslEnabled } = require('./lib');
const [endpoint, topic, mode, waitArg] = process.argv.slice(2);
const waitMs = Number(waitArg ?? 20000);

main(async () => {
  const checks = [];
  let answer = () => TransactionResolution.COMMIT;
  if (mode === 'check-rollback') answer = () => TransactionResolution.ROLLBACK;
  if (mode === 'check-unknown-then-commit') {
    answer = () => (checks.length === 1 ? TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED : TransactionResolution.COMMIT);
  }
  const checker = {
    async check(messageView) {
      checks.push(view(messageView));
      const r = answer();
      emit({ check: checks.length, id: messageView.messageId, resolution: r });
      return r;
    },
  };
  const producer = new rmq.Producer({ endpoints: endpoint, namespace: '', topics: [topic], checker, logger, sslEnabled });
  // The transaction_id each check-back command carried, as the broker sent it (the client echoes it in its answer; a
  // HalfMsgBroker puts the half's check token after the id for clients of other languages than .NET). Only observed:
  // the client's own handling runs unchanged.
  const checkTransactionIds = [];
  const onCheck = producer.onRecoverOrphanedTransactionCommand.bind(producer);
  producer.onRecoverOrphanedTransactionCommand = (endpoints, command) => {
    checkTransactionIds.push(command.getTransactionId());
    return onCheck(endpoints, command);
  };
  await producer.startup();
  emit({ started: true });

  if (mode === 'checker-commit') {
    // A fresh instance of the group: only answers checks.
    const until = Date.now() + waitMs;
    while (Date.now() < until && checks.length === 0) await sleep(100);
    await sleep(500); // let the EndTransaction go out
    emit({ result: 'done', checks, checkTransactionIds });
    await producer.shutdown();
    return;
  }

  const tx = producer.beginTransaction();
  const receipt = await producer.send({ topic, tag: 'tx', keys: ['k-' + mode], body: Buffer.from('tx-' + mode) }, tx);
  emit({ sent: receipt.messageId, transactionId: receipt.transactionId });

  if (mode === 'commit') {
    await tx.commit();
  } else if (mode === 'rollback') {
    await tx.rollback();
  } else if (mode === 'orphan') {
    // The producer "crashes": no decision, no shutdown, no NotifyClientTermination.
    emit({ result: 'orphaned', id: receipt.messageId });
    process.exit(0);
  } else {
    const wanted = mode === 'check-unknown-then-commit' ? 2 : 1;
    const until = Date.now() + waitMs;
    while (Date.now() < until && checks.length < wanted) await sleep(100);
    await sleep(500);
  }
  emit({ result: 'done', id: receipt.messageId, checks, checkTransactionIds });
  await producer.shutdown();
});
