// A publisher and subscriber in another language: publish a request body with amqplib, follow
// its events (benchmark.<id>.#) to the finish, write each event as one JSON line.
//   node seed_client.js AMQP_URL REQUESTS_QUEUE EVENTS_EXCHANGE BODY.json EVENTS.jsonl
"use strict";
const fs = require("fs");
const amqp = require("amqplib");

async function main() {
  const [url, queue, exchange, bodyFile, outFile] = process.argv.slice(2);
  const body = fs.readFileSync(bodyFile);
  const id = JSON.parse(body).id;
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  const { queue: mine } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
  await channel.bindQueue(mine, exchange, `benchmark.${id}.#`);
  const events = [];
  const finished = new Promise((resolve) => {
    channel.consume(mine, (message) => {
      const event = JSON.parse(message.content.toString("utf8"));
      events.push(event);
      channel.ack(message);
      if (event.subject === "benchmark_finish") resolve();
    });
  });
  channel.sendToQueue(queue, body, {
    contentType: "application/json", persistent: true, type: "benchmark_request",
    messageId: `node-${Date.now()}`,
  });
  await channel.waitForConfirms();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("no benchmark_finish within 300 s")), 300000);
  });
  await Promise.race([finished, timeout]);
  clearTimeout(timer);
  fs.writeFileSync(outFile, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
  await connection.close();
  console.log(JSON.stringify({ events: events.map((e) => e.subject), status: events.at(-1).status }));
}

main().catch((error) => { console.error(String(error.stack || error)); process.exit(1); });
