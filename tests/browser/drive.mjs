// A line-based remote control of one Chromium page for the Rust integration tests:
// each stdin line is a JSON command, each stdout line the JSON answer. The Rust side owns
// every process (Chromium, Kamailio, the gateway, SIPp); this only speaks CDP.
//
//   node drive.mjs http://127.0.0.1:CDP_PORT
//
// Commands: {op:"goto", url} {op:"fill", sel, value} {op:"click", sel}
//   {op:"waitText", sel, text, timeout} {op:"waitVisible", sel, timeout}
//   {op:"waitGone", sel, timeout} {op:"eval", js} {op:"screenshot", path} {op:"close"}
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const browser = await chromium.connectOverCDP(process.argv[2]);
const context = browser.contexts()[0] ?? (await browser.newContext());
const page = context.pages()[0] ?? (await context.newPage());
page.on('console', (m) => process.stderr.write(`console: ${m.text()}\n`));

const ops = {
  goto: (c) => page.goto(c.url),
  fill: (c) => page.fill(c.sel, c.value),
  click: (c) => page.click(c.sel),
  waitText: (c) =>
    page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent?.trim() === text,
      [c.sel, c.text],
      { timeout: c.timeout ?? 15000 },
    ),
  waitVisible: (c) => page.waitForSelector(c.sel, { state: 'visible', timeout: c.timeout ?? 15000 }),
  waitGone: (c) => page.waitForSelector(c.sel, { state: 'detached', timeout: c.timeout ?? 15000 }),
  eval: (c) => page.evaluate(c.js),
  screenshot: (c) => page.screenshot({ path: c.path, fullPage: true }),
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: `bad command: ${e.message}` }));
    continue;
  }
  if (cmd.op === 'close') break;
  try {
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    const value = await op(cmd);
    console.log(JSON.stringify({ ok: true, value: value === undefined ? null : value }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e) }));
  }
}
await browser.close().catch(() => {});
process.exit(0);
