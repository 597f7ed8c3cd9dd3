// npm install ali-ons@3.12.0   (a RocketMQ 4 Remoting client, unmodified)
const { Producer, Consumer, Message } = require('ali-ons');

const nameSrv = process.argv[2] ?? '127.0.0.1:9876'; // HalfMsgBroker's embedded name server
const topic = process.argv[3] ?? 'orders';
const httpclient = {}; // ali-ons requires one; it is only used without nameSrv

async function main() {
  const producer = new Producer({ httpclient, nameSrv, producerGroup: 'order-service' });
  await producer.ready();
  const sent = await producer.send(new Message(topic, 'created', 'order 1 created'));
  console.log('sent:', sent.sendStatus);

  const consumer = new Consumer({ httpclient, nameSrv, consumerGroup: 'shipping' });
  const done = new Promise(resolve => consumer.subscribe(topic, 'created', async msg => {
    console.log('received:', msg.body.toString()); // throw here and the message comes back via %RETRY%shipping
    resolve();
  }));
  await consumer.ready();
  await done;
  await consumer.close(); // commits the consumed offsets to the broker
  await producer.close();
}

main().then(() => process.exit(0), e => { console.error(e); process.exit(1); });
