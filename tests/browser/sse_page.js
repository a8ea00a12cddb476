// Drives the dashboard page in the installed headless Chromium over the
// DevTools protocol (puppeteer-core), on its default transport: the Server-
// Sent Events stream. Run by tests/integration/test_browser_sse.py, which
// talks to it by lines:
//   argv: CHROMIUM URL FIRST_TOTAL
//   out:  "ready {json}"  once the page shows FIRST_TOTAL over the stream
//   in:   "expect N"      (the test sent more answers)
//   out:  "done {json}"   once the page shows N without a reload, or on a
//                         time-out with what it showed; then it exits
// Every check's figures go back as JSON; the test asserts them.
'use strict';
const puppeteer = require('puppeteer-core');
const readline = require('readline');

const [chromium, url, firstTotal] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function shown(page) {
  return page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    return {
      total: q('#total-answers').dataset.value,
      mode: q('#mode').dataset.mode,
      ready: document.body.dataset.ready,
      burstPoints: Number(q('#burst').dataset.points),
      burstLine: q('#burst-line').getAttribute('points'),
      burstPeak: q('#burst').dataset.peak,
      timer: q('#current-timer').textContent,
      timerOpenMs: q('#current-timer').dataset.openMs,
      loadedAt: window.__livetallyLoadedAt || null,
      navigations: performance.getEntriesByType('navigation').length,
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      icon: (q('link[rel=icon]') || {}).href || '',
    };
  });
}

async function waitTotal(page, want) {
  try {
    await page.waitForFunction(
      (w) => document.querySelector('#total-answers').dataset.value === w &&
             document.querySelector('#mode').dataset.mode === 'stream',
      { timeout: TIMEOUT_MS, polling: 100 }, String(want));
    return true;
  } catch (e) {
    return false;
  }
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions'],
  });
  const outside = [];
  const failed = [];
  let iconStatus = null;
  let streamEncoding = null;
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 1, isMobile: true });
    const origin = new URL(url).origin;
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin) && !u.startsWith('data:')) outside.push(u);
    });
    page.on('requestfailed', (r) => failed.push(r.url()));
    page.on('response', (r) => {
      if (r.url().endsWith('/favicon.svg')) iconStatus = r.status();
      if (r.url().endsWith('/v1/stats/stream')) streamEncoding = r.headers()['content-encoding'] || '';
    });
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    await page.evaluate(() => { window.__livetallyLoadedAt = Date.now(); });
    const okFirst = await waitTotal(page, firstTotal);
    const first = await shown(page);
    process.stdout.write('ready ' + JSON.stringify({ ok: okFirst, ...first }) + '\n');

    const rl = readline.createInterface({ input: process.stdin });
    const line = await new Promise((resolve) => rl.once('line', resolve));
    rl.close();
    const want = line.replace(/^expect /, '').trim();
    const okSecond = await waitTotal(page, want);
    // the icon is fetched by the browser on its own time: ask for it too
    const icon = await page.evaluate(async () => {
      const r = await fetch('favicon.svg');
      return { status: r.status, type: r.headers.get('content-type') };
    });
    const second = await shown(page);
    process.stdout.write('done ' + JSON.stringify({
      ok: okSecond, ...second, outside, failed, iconStatus, iconFetch: icon, streamEncoding,
    }) + '\n');
  } finally {
    await browser.close();
  }
})().catch((e) => {
  process.stdout.write('done ' + JSON.stringify({ ok: false, error: String(e) }) + '\n');
  process.exit(1);
});
