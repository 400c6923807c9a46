// Checks one gate, then prints the account's gates each time they change (Ctrl-C stops).
// ENTITLEMENT_URL defaults to the local stack's address; PRODUCT_TOKEN is the `product` token.
import { EntitlementsClient } from "../src/client.js";

const client = new EntitlementsClient({ target: process.env["ENTITLEMENT_URL"] ?? "http://127.0.0.1:50051", token: process.env["PRODUCT_TOKEN"] ?? "" });
console.log("acct_1 may export:", await client.check("acct_1", "export"));
for await (const entitlements of client.watch("acct_1")) {
  console.log(`revision ${entitlements.revision}: gates [${entitlements.gates.join(", ")}]`);
}
