// npm install rocketmq-client-nodejs@1.0.8   (the official Apache RocketMQ 5 Node.js client, unmodified)
const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const endpoints = process.argv[2] ?? '127.0.0.1:8081'; // HalfMsgBroker's gRPC port
const topic = process.argv[3] ?? 'orders';

async function main() {
  // The checker answers the broker's check-backs for transactions left undecided.
  const producer = new Producer({
    endpoints, namespace: '', topics: [topic],
    checker: { async check(message) { return TransactionResolution.COMMIT; } },
  });
  await producer.startup();

  const tx = producer.beginTransaction();
  const receipt = await producer.send({ topic, tag: 'created', keys: ['order-1'], body: Buffer.from('order 1 created') }, tx);
  // ... run the local database transaction here ...
  await tx.commit(); // or tx.rollback(): the message is then never delivered

  const consumer = new SimpleConsumer({ endpoints, namespace: '', consumerGroup: 'shipping', subscriptions: new Map([[topic, '*']]) });
  await consumer.startup();
  const messages = await consumer.receive(16, 30000); // up to 16 messages, invisible to others for 30 s
  for (const m of messages) {
    console.log(m.messageId === receipt.messageId ? 'received our event:' : 'received:', m.body.toString());
    await consumer.ack(m);
  }
  await consumer.shutdown();
  await producer.shutdown();
}

main().then(() => process.exit(0), e => { console.error(e); process.exit(1); });
