// Browser test of the page's number formats (issue 16): starts `overdrive serve` on an ephemeral
// loopback port and loads the page in Debian's headless Chromium.
// - Explore: precision is `auto` by default; "go to" the seahorse valley at zoom 70 requests tiles
//   whose x and y exceed 2^53 (exactly the indices computed here with BigInt) and shows the format
//   the server used (X-Overdrive-Precision), a deep one; at zoom 3 it shows f64.
// - Compare formats: a bad free-form name is refused with the server's 400 reason; then N panels
//   show the same tiles in N distinct formats, each with its disagreement fraction, which equals
//   the pixel-weighted mean of the tiles' X-Overdrive-Disagreement headers (fetched here again);
//   f32 at a depth past its precision disagrees more than the reference format itself; a click on
//   one panel zooms every panel.
// Then stops the server with SIGTERM and fails unless it exits 0 (sanitizer reports).
// Usage: node formats_test.mjs OVERDRIVE_BIN [SCREENSHOT.png]
//        node formats_test.mjs http://HOST:PORT/ [SCREENSHOT.png]   (a running server)
import { chromium } from "playwright-core";
import { startServer } from "./serve.mjs";

const [target, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };
const check = (ok, msg) => { if (!ok) fail(msg); return ok; };

// The dive of the README's atlas: the seahorse valley.
const RE = "-0.743643887037151", IM = "0.131825904205330";
/// x0, y0 of an n x n view centred on (RE, IM) at zoom z, exactly (the page's rule: round(X - n/2)).
function expectedTopLeft(z, n) {
  const dec = (s) => { const [i, f = ""] = s.split("."); return [BigInt(i + f), 10n ** BigInt(f.length)]; };
  const [rn, rd] = dec(RE), [in_, id] = dec(IM);
  const floorDiv = (a, b) => (a % b !== 0n && a < 0n ? a / b - 1n : a / b);
  const one = 1n << BigInt(z), N1 = BigInt(n - 1);
  return [floorDiv((2n * rn + 5n * rd) * one - N1 * 4n * rd, 8n * rd),
          floorDiv((2n * id - in_) * one - N1 * 2n * id, 4n * id)];
}

const server = await startServer(target, fail);
const deadline = setTimeout(() => {
  console.error("FAIL: test exceeded 170 s");
  server.kill();
  process.exit(1);
}, 170000);

let browser;
try {
  const url = await server.url;
  const stats = await (await fetch(url + "api/stats")).json();
  const names = stats.names.precisions;
  console.log("names.precisions: " + names.join(" "));
  for (const f of ["auto", "f64", "f32", "dd"]) check(names.includes(f), `names.precisions lacks ${f}`);

  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url + "?autoload=0");
  await page.waitForFunction(() => document.querySelectorAll("#precision option").length > 1 &&
                             document.querySelectorAll("#cmp-slots input").length === 4, null, { timeout: 20000 });
  check(await page.inputValue("#precision") === "auto", "explore's precision is not auto by default");

  // ---- Explore, deep: zoom 70 in the seahorse valley, tile indices beyond 2^53 ----
  const loadsDone = (k) => page.waitForFunction((k) => window.overdrive.loads.length === k && !window.overdrive.busy,
                                                k, { timeout: 60000 });
  const deepZ = 70, n = 2;
  await page.fill("#iter", "256");
  await page.fill("#n", String(n));
  await page.fill("#zoom", String(deepZ));
  await page.fill("#goto", `${RE},${IM}`);
  await page.click("#go");
  await loadsDone(1);
  const deep = await page.evaluate(() => {
    const l = window.overdrive.loads[0];
    return { z: l.z, labels: l.tiles.map((t) => t.label), urls: l.tiles.map((t) => t.url), decoded: l.decoded,
             errors: l.tiles.map((t) => t.error).filter(Boolean), precisions: l.precisions,
             inuse: document.querySelector("#inuse b").textContent, where: document.querySelector("#where").textContent };
  });
  console.log(JSON.stringify({ deep: { labels: deep.labels, precisions: deep.precisions, inuse: deep.inuse } }));
  check(deep.errors.length === 0, "deep tiles failed: " + deep.errors.join(" | "));
  const [ex0, ey0] = expectedTopLeft(deepZ, n);
  const want = [];
  for (let r = 0n; r < BigInt(n); r++) for (let c = 0n; c < BigInt(n); c++) want.push(`${deepZ}/${ex0 + c}/${ey0 + r}`);
  check(deep.labels.join() === want.join(), `deep tiles ${deep.labels.join()} expected ${want.join()}`);
  check(ex0 > 2n ** 53n && ey0 > 2n ** 53n, "test set-up: indices not beyond 2^53");
  check(deep.urls.every((u) => /precision=auto/.test(u)), "deep tiles not requested with precision=auto");
  check(deep.decoded === n * n, `${deep.decoded}/${n * n} deep tiles decoded`);
  // What the page shows is what the server said: ask for one of the same tiles here.
  const probe = await fetch(url + deep.urls[0].slice(1));
  const served = probe.headers.get("x-overdrive-precision");
  await probe.arrayBuffer();
  check(probe.ok && served, `deep tile: ${probe.status}, X-Overdrive-Precision ${served}`);
  check(deep.inuse === served, `page shows format "${deep.inuse}", the server used "${served}"`);
  check(!["f64", "f32", "auto", "", "(not reported)"].includes(deep.inuse),
        `zoom ${deepZ} rendered in "${deep.inuse}", expected a deep format`);
  check(deep.where.includes("-0.74364388703715"), "the view's centre is not shown: " + deep.where);

  // The address bar holds the view exactly: the same URL loads the same tiles.
  const shared = page.url();
  check(/[?&]z=70(&|$)/.test(shared) && /center=-0\.743643887037/.test(decodeURIComponent(shared)), "URL: " + shared);
  await page.goto(shared);
  await page.waitForFunction(() => document.querySelectorAll("#precision option").length > 1, null, { timeout: 20000 });
  await page.fill("#iter", "256");
  await page.click("#load");
  await loadsDone(1);
  const again = await page.evaluate(() => window.overdrive.loads[0].tiles.map((t) => t.label));
  check(again.join() === deep.labels.join(), `the shared URL loads ${again.join()}`);

  // Explore, shallow: zoom 3 keeps the centre, auto resolves to f64.
  await page.fill("#zoom", "3");
  await page.click("#load");
  await loadsDone(2);
  const shallow = await page.evaluate(() => document.querySelector("#inuse b").textContent);
  check(shallow === "f64", `zoom 3 rendered in "${shallow}", expected f64`);

  // ---- Compare formats ----
  // Three distinct formats at a depth past f32's precision (zoom 20, a pixel ~1e-8 wide; f32's
  // spacing near 0.74 is 6e-8) where f64 still resolves; the view and formats from the page's URL.
  const formats = ["f32", names.includes("posit16") ? "posit16" : "f64", "dd"];
  await page.setViewportSize({ width: 1000, height: 800 });  // smaller tiles: less work under sanitizers
  await page.goto(url + `?mode=formats&z=20&center=${RE},${IM}&iter=256&formats=${formats.join(",")}`);
  // Until k compare loads finished, or the page refused to load (its status says why).
  const cmpDone = async (k) => {
    await page.waitForFunction((k) => !window.overdrive.cmp.busy && (window.overdrive.cmp.loads >= k ||
      document.querySelector("#cmp-status").classList.contains("bad")), k, { timeout: 90000 });
    const st = await page.evaluate(() => [window.overdrive.cmp.loads, document.querySelector("#cmp-status").textContent]);
    if (st[0] < k) throw new Error(`compare load ${k} did not run: ${st[1]}`);
  };
  await cmpDone(1);
  const panels = async () => page.evaluate(() => [...document.querySelectorAll("#panels .fmt-panel")].map((el, i) => {
    const p = window.overdrive.cmp.panels[i];
    return { format: el.dataset.format, shown: el.querySelector(".fmt-fraction")?.textContent ?? null,
      fraction: el.dataset.fraction === "" ? null : Number(el.dataset.fraction), tiles: p.tiles, decoded: p.decoded,
      withFraction: p.withFraction, error: p.error, urls: p.urls, resolved: p.resolved, reference: p.reference,
      imgs: [...el.querySelectorAll(".tiles img")].filter((im) => im.naturalWidth > 0).length };
  }));
  const cmp1 = await panels();
  const before = 1;
  console.log(JSON.stringify(cmp1.map(({ urls, ...p }) => ({ ...p, first: urls[0] }))));
  check(cmp1.length === 3, `${cmp1.length} panels, expected 3`);
  check(cmp1.map((p) => p.format).join() === formats.join(), `panels ${cmp1.map((p) => p.format)} expected ${formats}`);
  check(new Set(cmp1.map((p) => p.format)).size === cmp1.length, "panel formats not distinct");
  for (const p of cmp1) {
    check(!p.error, `${p.format}: ${p.error}`);
    check(p.tiles === 4 && p.decoded === 4 && p.imgs === 4, `${p.format}: ${p.decoded}/${p.tiles} tiles decoded, ${p.imgs} shown`);
    check(p.withFraction === p.tiles, `${p.format}: ${p.withFraction}/${p.tiles} tiles had ${"X-Overdrive-Disagreement"}`);
    check(p.fraction !== null && p.fraction >= 0 && p.fraction <= 1 && p.shown, `${p.format}: fraction ${p.fraction} shown "${p.shown}"`);
    check(p.urls.every((u) => /[?&]ref=1(&|$)/.test(u) && /[?&]iter=256(&|$)/.test(u) &&
                       u.includes("precision=" + encodeURIComponent(p.format))),
          `${p.format}: tiles not requested with ref=1, iter=256 and its precision`);
    check(Object.keys(p.resolved).join() === p.format, `${p.format}: rendered in ${Object.keys(p.resolved)}`);
  }
  // The same tiles in every panel (same z/x/y, only the format differs).
  const tilesOf = (p) => p.urls.map((u) => u.split("?")[0]).join();
  check(cmp1.every((p) => tilesOf(p) === tilesOf(cmp1[0])), "panels show different tiles");
  // Each panel's fraction is the pixel-weighted mean of its tiles' headers (equal-size tiles: the mean).
  for (const p of cmp1) {
    let sum = 0;
    for (const u of p.urls) {
      const r = await fetch(url + u.slice(1));
      sum += Number(r.headers.get("x-overdrive-disagreement"));
      await r.arrayBuffer();
    }
    check(Math.abs(sum / p.urls.length - p.fraction) < 1e-9, `${p.format}: panel ${p.fraction}, tiles' mean ${sum / p.urls.length}`);
  }
  const byName = Object.fromEntries(cmp1.map((p) => [p.format, p]));
  const ref = Object.keys(byName.dd.reference)[0];
  console.log(`reference: ${ref}`);
  check(byName.f32.fraction > 0.01, `f32 at zoom 20 disagrees on only ${byName.f32.fraction}`);
  check(byName.f32.fraction > byName.dd.fraction, "f32 does not disagree more than dd");
  if (ref === "dd") check(byName.dd.fraction === 0, `dd is the reference but disagrees on ${byName.dd.fraction}`);

  // A bad free-form format is refused with the server's reason, and nothing loads.
  await page.fill("#cmp-format-0", "posit7");
  await page.click("#cmp-show");
  await page.waitForFunction(() => /posit7/.test(document.querySelector("#cmp-status").textContent), null, { timeout: 20000 });
  const badReason = await page.evaluate(() => ({ status: document.querySelector("#cmp-status").textContent,
    invalid: document.querySelector("#cmp-format-0").classList.contains("invalid"), loads: window.overdrive.cmp.loads }));
  const direct = await fetch(url + "tile/0/0/0.png?precision=posit7");
  const directReason = (await direct.text()).trim();
  check(direct.status === 400, `precision=posit7 got ${direct.status}, expected 400`);
  check(badReason.invalid && badReason.status.includes(directReason),
        `bad format: status "${badReason.status}" does not show the server's reason "${directReason}"`);
  check(badReason.loads === 1, "a compare load ran with a bad format");
  await page.fill("#cmp-format-0", formats[0]);

  // Zooming one panel zooms all of them together.
  const box = await page.locator("#panels .fmt-panel .tiles").nth(1).boundingBox();
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  await cmpDone(before + 1);
  const cmp2 = await panels();
  const zooms = cmp2.map((p) => p.urls[0].match(/^\/tile\/(\d+)\//)[1]);
  check(zooms.every((z) => z === "21"), `after a click the panels are at zooms ${zooms}, expected 21`);
  check(cmp2.map((p) => p.format).join() === formats.join(), `after a click the panels are ${cmp2.map((p) => p.format)}`);
  check(cmp2.every((p) => tilesOf(p) === tilesOf(cmp2[0])), "after a click the panels show different tiles");
  check(cmp2.every((p) => !p.error && p.decoded === p.tiles && p.fraction !== null), "after a click: panels incomplete");
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (browser) await browser.close().catch((e) => fail("closing the browser: " + e.message));
  await server.stop();
  clearTimeout(deadline);
}
console.log(process.exitCode ? "formats browser test failed" : "formats browser test passed");
