// Type-checked (never run) by test/package.test.mjs against the installed package's declarations.
import { connect, CloseCode, SealcastError, type Ack, type JoinResult, type ServerKey } from "@sealcast/client";
import { connect as connectBrowser } from "@sealcast/client/browser";

const keys: ServerKey[] = [{ kid: "k", publicKey: "p" }];
const client = connect({ url: "ws://127.0.0.1:1/ws", token: "t", serverKeys: keys, reconnect: false });
const joined: Promise<JoinResult> = client.join("room");
const ack: Promise<Ack> = client.publish("room", "event", { n: 1 }, { id: "1" });
client.on("close", ({ code }) => code === CloseCode.DecryptionFailed);
client.on("error", (e: SealcastError) => e.code);
const same: typeof connect = connectBrowser;
export { joined, ack, same };
