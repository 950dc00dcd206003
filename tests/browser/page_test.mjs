// Browser test: starts `overdrive serve` on an ephemeral loopback port, loads the page in Debian's
// headless Chromium, waits for every tile, and checks that the tiles decoded and that the
// waterfall and worker lanes were drawn. Saves a screenshot. Then stops the server with SIGTERM
// and fails unless it exits 0: under asan/tsan a sanitizer report in the server makes it exit
// non-zero, and the tail of its stderr is printed (tests/browser/serve.mjs). The server inherits
// this process's environment (ctest sets TSAN_OPTIONS/ASAN_OPTIONS/UBSAN_OPTIONS).
// Usage: node page_test.mjs OVERDRIVE_BIN SCREENSHOT.png
import { chromium } from "playwright-core";
import { startServer } from "./serve.mjs";

const [bin, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };

const server = await startServer(bin, fail);
const deadline = setTimeout(() => {
  console.error("FAIL: test exceeded 150 s");
  server.kill();
  process.exit(1);
}, 150000);

let browser;
try {
  const url = await server.url;

  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url + "?autoload=0");
  await page.fill("#iter", "512");
  await page.click("#compare");
  // Three loads (inline, tbb, pool) of 16 tiles each.
  await page.waitForFunction(() => window.overdrive.loads.length === 3 && !window.overdrive.busy,
                             null, { timeout: 120000 });
  const loads = await page.evaluate(() => window.overdrive.loads.map((l) => ({
    executor: l.executor, tiles: l.tiles.length, decoded: l.decoded,
    timed: l.tiles.filter((t) => t.end !== undefined && t.hasServer).length,
    waterfallBars: l.waterfallBars, laneBars: l.laneBars, events: l.events.length,
  })));
  console.log(JSON.stringify(loads));
  for (const l of loads) {
    if (l.tiles !== 16) fail(`${l.executor}: ${l.tiles} tiles requested, expected 16`);
    if (l.decoded !== l.tiles) fail(`${l.executor}: only ${l.decoded}/${l.tiles} tiles decoded`);
    if (l.timed !== l.tiles) fail(`${l.executor}: Resource/Server-Timing for ${l.timed}/${l.tiles} tiles`);
    if (l.waterfallBars < l.tiles * 3) fail(`${l.executor}: waterfall drew ${l.waterfallBars} bars`);
    if (l.laneBars !== l.tiles) fail(`${l.executor}: worker lanes drew ${l.laneBars} bars for ${l.tiles} jobs`);
  }
  if (loads.map((l) => l.executor).join() !== "inline,tbb,pool") fail("compare order");
  const summaries = await page.locator(".summary").count();
  if (summaries !== 3) fail(`${summaries} summary lines`);
  const imgs = await page.evaluate(() => [...document.querySelectorAll("#grid img")].filter((i) => i.naturalWidth === 256).length);
  if (imgs !== 16) fail(`${imgs} grid images decoded at 256 px`);
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (browser) await browser.close().catch((e) => fail("closing the browser: " + e.message));
  await server.stop();
  clearTimeout(deadline);
}
console.log(process.exitCode ? "browser test failed" : "browser test passed");
