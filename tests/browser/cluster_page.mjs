// The page served through a balancer (scripts/cluster): loads it in Debian's headless Chromium,
// waits until it has found the replicas (/replica/<id>/api/stats), loads one grid, checks that
// every tile names the replica that rendered it and that the worker lanes have one group per
// replica, and saves a screenshot. Not part of ctest: it needs a running cluster.
// Usage: node cluster_page.mjs http://127.0.0.1:PORT/ SCREENSHOT.png [REPLICAS]
import { chromium } from "playwright-core";

const [url, shot, replicasArg] = process.argv.slice(2);
const want = Number(replicasArg || 2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };

let browser;
try {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(new URL("?autoload=0", url).href);
  await page.waitForFunction(() => window.overdrive.viaBalancer === true, null, { timeout: 20000 });
  await page.click("#load");
  await page.waitForFunction(() => window.overdrive.loads.length === 1 && !window.overdrive.busy,
                             null, { timeout: 120000 });
  const load = await page.evaluate(() => {
    const l = window.overdrive.loads[0];
    return { tiles: l.tiles.length, decoded: l.decoded, laneBars: l.laneBars,
             replicas: l.replicas.map((r) => ({ id: r.id, workers: r.workers, tiles: r.tiles })),
             tileReplicas: l.tiles.map((t) => t.replica), seen: window.overdrive.replicas };
  });
  console.log(JSON.stringify(load));
  if (load.decoded !== load.tiles) fail(`${load.decoded}/${load.tiles} tiles decoded`);
  if (load.replicas.length !== want) fail(`${load.replicas.length} replica groups, expected ${want}`);
  if (load.tileReplicas.some((r) => !r)) fail("a tile without X-Overdrive-Replica");
  if (load.replicas.reduce((a, r) => a + r.tiles, 0) !== load.tiles) fail("tiles per replica do not add up");
  if (load.laneBars !== load.tiles) fail(`worker lanes drew ${load.laneBars} bars for ${load.tiles} tiles`);
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (browser) await browser.close().catch((e) => fail("closing the browser: " + e.message));
}
console.log(process.exitCode ? "cluster page check failed" : "cluster page check passed");
