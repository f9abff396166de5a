// Run by test/package.test.mjs in the temporary project: one live session through the installed package.
// Arguments: url token kid publicKey. Prints one JSON line with what happened.
import { connect } from "@sealcast/client";

const [url, token, kid, publicKey] = process.argv.slice(2);
const serverKeys = [{ kid, publicKey }];
const a = connect({ url, token, serverKeys, reconnect: false });
const b = connect({ url, token, serverKeys, reconnect: false });
const info = await a.ready();
await b.ready();
const received = new Promise((resolve) => b.on("note", (data, event) => resolve({ room: "pack", event, data })));
const joined = await a.join("pack");
await b.join("pack");
const ack = await a.publish("pack", "note", { text: "from the tarball" }, { id: "n1" });
const result = {
  encrypted: info.encrypted,
  kid: info.kid,
  joined: joined.rooms.some((r) => r.room === "pack"),
  ack,
  received: await received,
  browserEntry: new URL(import.meta.resolve("@sealcast/client/browser")).pathname,
};
a.close();
b.close();
console.log(JSON.stringify(result));
