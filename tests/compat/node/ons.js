// RocketMQ 4 Remoting compatibility with the unmodified ali-ons 3.12.0 client, routed through HalfMsgBroker's name server.
// node ons.js produce <nameSrv> <topic> '{"count":3,"prefix":"m","tag":"TagA"}'
// node ons.js consume <nameSrv> <topic> <group> '{"count":3,"timeoutMs":30000,"tag":"*","failOnce":["m-1"]}'
// Prints JSON lines; the last one carries "result".
'use strict';
const { Producer, Consumer, Message } = require('ali-ons');

const [mode, nameSrv, topic, ...rest] = process.argv.slice(2);
const emit = obj => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = ms => new Promise(r => setTimeout(r, ms));
// ali-ons logs through its logger option; route it to stderr (captured by the test on failure).
const logger = {
  info: (...a) => console.error('[info]', ...a),
  warn: (...a) => console.error('[warn]', ...a),
  error: (...a) => console.error('[error]', ...a),
  debug: () => {},
};
// ali-ons requires an httpclient (used only without nameSrv); it is never called here.
const httpclient = {};

async function produce(spec) {
  // With spec.accessKey/secretKey ali-ons signs every request (RocketMQ 4 ACL: AccessKey, OnsChannel, Signature).
  const acl = spec.accessKey ? { accessKeyId: spec.accessKey, accessKeySecret: spec.secretKey } : {};
  const producer = new Producer({ httpclient, nameSrv, producerGroup: 'PG_' + topic.slice(0, 40), logger, ...acl });
  await producer.ready();
  const sent = [];
  for (let i = 0; i < spec.count; i++) {
    const msg = new Message(topic, spec.tag ?? 'TagA', `${spec.prefix ?? 'm'}-${i}`);
    msg.keys = [`key-${i}`];
    const r = await producer.send(msg);
    sent.push({ msgId: r.msgId, status: r.sendStatus, queueId: r.messageQueue.queueId, queueOffset: r.queueOffset });
  }
  await producer.close();
  emit({ result: 'sent', sent });
}

async function consume(group, spec) {
  const failOnce = new Set(spec.failOnce ?? []);
  const failed = new Set();
  const got = [];
  const consumer = new Consumer({ httpclient, nameSrv, consumerGroup: group, logger, rebalanceInterval: 1000, persistConsumerOffsetInterval: 1000 });
  consumer.on('error', e => console.error('[consumer error]', e && e.message));
  consumer.subscribe(topic, spec.tag ?? '*', async msg => {
    const body = msg.body.toString('utf8');
    if (failOnce.has(body) && !failed.has(body)) {
      failed.add(body);
      emit({ failing: body, reconsumeTimes: msg.reconsumeTimes });
      throw new Error('simulated consume failure of ' + body);
    }
    got.push({ body, tags: msg.tags, keys: msg.keys, reconsumeTimes: msg.reconsumeTimes, topic: msg.topic, msgId: msg.msgId, queueOffset: msg.queueOffset });
    emit({ got: body });
  });
  await consumer.ready();
  const until = Date.now() + (spec.timeoutMs ?? 30000);
  while (Date.now() < until && got.length < spec.count) await sleep(50);
  // Let the last offsets reach the broker (close() persists them too).
  await consumer.close();
  emit({ result: got.length >= spec.count ? 'done' : 'timeout', got });
}

(async () => {
  if (mode === 'produce') await produce(JSON.parse(rest[0] ?? '{}'));
  else if (mode === 'consume') await consume(rest[0], JSON.parse(rest[1] ?? '{}'));
  else throw new Error('unknown mode ' + mode);
  process.exit(0);
})().catch(e => {
  emit({ error: String(e && e.stack || e) });
  process.exit(1);
});
