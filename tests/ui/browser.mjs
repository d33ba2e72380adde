// Browser scenarios for the web UI, in Debian's headless Chromium driven by
// playwright-core. `tests/ui.rs` starts the daemon (and nginx) and runs one
// scenario per process:
//
//   node tests/ui/browser.mjs <scenario>
//
// with LOVEBEAT_URL (the page), LOVEBEAT_API (the daemon itself),
// LOVEBEAT_UDP (its statsd port) and LOVEBEAT_SHOTS (where a failing
// scenario leaves its screenshot). `docs` writes the README screenshots.
import { chromium } from 'playwright-core';
import dgram from 'node:dgram';
import { mkdirSync } from 'node:fs';
import assert from 'node:assert/strict';

const scenario = process.argv[2];
const url = process.env.LOVEBEAT_URL;
const apiBase = process.env.LOVEBEAT_API || url;
const udpPort = Number(process.env.LOVEBEAT_UDP);
const shots = process.env.LOVEBEAT_SHOTS || 'target/ui-screenshots';

function udp(lines) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.send(Buffer.from(lines), udpPort, '127.0.0.1', (err) => {
      s.close();
      if (err) reject(err); else resolve();
    });
  });
}

async function api(path, opts) {
  const r = await fetch(new URL(path, apiBase), opts);
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function service(name) {
  const r = await api(`api/services/${name}`);
  return r.status === 200 ? r.body.service : null;
}

async function until(what, f, ms = 8000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const row = (page, name) => page.locator(`.row[data-name="${name}"]`);

async function stateOf(page, name) {
  return (await row(page, name).locator('.state').innerText()).trim();
}

async function select(page, name) {
  await row(page, name).getByRole('checkbox').check();
}

const scenarios = {
  // A UDP beat appears without a reload, turns ERROR after its timeout and
  // OK on the next beat.
  async live(page) {
    await page.goto(`${url}#/services`);
    await page.locator('#live.on').waitFor();
    await udp('ui.live.timeout:2|g\nui.live.beat:1|c\n');
    await row(page, 'ui.live').waitFor();
    assert.match(await stateOf(page, 'ui.live'), /OK/);
    assert.match(await row(page, 'ui.live').locator('.c-timeout').innerText(), /2s/);
    await page.locator('.row[data-name="ui.live"] .state.error').waitFor({ timeout: 6000 });
    assert.match(await stateOf(page, 'ui.live'), /ERROR/);
    assert.equal(await page.locator('#n-error').innerText(), '1');
    await udp('ui.live.beat:1|c\n');
    await page.locator('.row[data-name="ui.live"] .state.ok').waitFor({ timeout: 4000 });
    assert.equal(await page.locator('#n-error').innerText(), '0');
  },

  // Mute and delete from the page change the daemon's state.
  async actions(page) {
    for (const n of ['act.a', 'act.b', 'act.c']) {
      assert.equal((await api(`api/services/${n}?timeout=60`, { method: 'POST' })).status, 200);
    }
    await page.goto(`${url}#/services`);
    await row(page, 'act.c').waitFor();
    await select(page, 'act.a');
    await select(page, 'act.c');
    await page.getByRole('button', { name: /Mute/ }).first().click();
    await until('act.a and act.c muted', async () =>
      (await service('act.a'))?.state === 'muted' && (await service('act.c'))?.state === 'muted');
    assert.equal((await service('act.b')).state, 'ok');
    await page.locator('.row[data-name="act.a"] .state.muted').waitFor();

    await select(page, 'act.a');
    await select(page, 'act.c');
    await page.getByRole('button', { name: /Unmute/ }).click();
    await until('act.a unmuted', async () => (await service('act.a'))?.state === 'ok');

    // The selection stays after an action; clear it to pick another.
    assert.ok(await row(page, 'act.a').getByRole('checkbox').isChecked());
    await page.getByRole('checkbox', { name: 'Select all shown services' }).check();
    await page.getByRole('checkbox', { name: 'Select all shown services' }).uncheck();
    await page.locator('#count', { hasText: '0 selected' }).waitFor();
    // Delete asks first; dismissing keeps the service.
    await select(page, 'act.b');
    page.once('dialog', (d) => d.dismiss());
    await page.getByRole('button', { name: /Delete/ }).click();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(await service('act.b'), 'dismissed delete keeps the service');
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await page.getByRole('button', { name: /Delete/ }).click();
    await until('act.b deleted', async () => (await service('act.b')) === null);
    assert.match(asked, /act\.b/);
    await row(page, 'act.b').waitFor({ state: 'detached' });
    assert.ok(await service('act.a'), 'only the selected service was deleted');
  },

  // Names sort by the value of their numbers; a schedule's text stays in
  // its row, on a wide screen and on a phone; dates say their zone.
  async order(page) {
    for (const n of ['ord.w10003', 'ord.w1003', 'ord.w2', 'ord.w20']) {
      assert.equal((await api(`api/services/${n}?timeout=60`, { method: 'POST' })).status, 200);
    }
    const sched = 'ord.job-with-a-long-schedule-name-that-goes-on';
    const body = JSON.stringify({ schedule: '*/5 1-3,7,9-11 * * 1-5', tz: 'America/Argentina/ComodRivadavia', beat: true });
    assert.equal((await api(`api/services/${sched}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
    })).status, 200);
    for (const width of [1280, 360]) {
      await page.setViewportSize({ width, height: 800 });
      await page.goto(`${url}#/services`);
      await page.locator('#filter').fill('ord.');
      await row(page, sched).waitFor();
      await until('sorted', async () => (await page.locator('.row').count()) === 5);
      const names = await page.locator('.row').evaluateAll((rows) => rows
        .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
        .map((r) => r.dataset.name));
      assert.deepEqual(names.filter((n) => n !== sched),
        ['ord.w2', 'ord.w20', 'ord.w1003', 'ord.w10003'], `at ${width}px`);
      // No cell of a row reaches below the row's own bottom (into the
      // next row), and the name is never cut on a phone's width.
      const spill = await page.locator('.row').evaluateAll((rows) => rows.flatMap((r) => {
        const bottom = r.getBoundingClientRect().bottom;
        return [...r.children]
          .filter((c) => c.getBoundingClientRect().bottom > bottom + 1)
          .map((c) => `${r.dataset.name}: ${c.className} ends at ${c.getBoundingClientRect().bottom}, row at ${bottom}`);
      }));
      assert.deepEqual(spill, [], `cells spill out of their rows at ${width}px`);
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    // A beat time names its zone and is in ISO order, 24 hours.
    const when = await row(page, 'ord.w2').locator('.c-beat small').innerText();
    assert.match(when, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC([+-]\d{2}:\d{2})?$/);
  },

  // A service's page draws its history: OK, then ERROR, then OK again,
  // each period with its exact times on hover; the range can be changed.
  async timeline(page) {
    const name = 'tl.svc';
    // Beats over a second apart: each also adds an interval to the chart.
    assert.equal((await api(`api/services/${name}?timeout=3600`, { method: 'POST' })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api(`api/services/${name}?timeout=0`, { method: 'POST' })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api(`api/services/${name}?timeout=3600`, { method: 'POST' })).status, 200);
    await until('three changes in the history', async () =>
      (await api(`api/services/${name}/history`)).body?.changes?.length === 3);
    await page.goto(`${url}#/services`);
    await row(page, name).locator('[data-open]').click();
    await page.locator('#timeline rect.error').waitFor();
    const classes = await page.locator('#timeline rect').evaluateAll((rs) => rs.map((r) => r.getAttribute('class')));
    assert.deepEqual(classes, ['unknown', 'ok', 'error', 'ok']);
    const hover = await page.locator('#timeline rect.error title').textContent();
    assert.match(hover, /^error: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC.* to \d{4}-/);
    await page.locator('#timeline-range').selectOption({ label: '365 days' });
    await until('redrawn', async () => (await page.locator('#timeline').getAttribute('aria-label')).includes('365d'));
    // The interval chart has axes in time units.
    await page.locator('#chart rect').first().waitFor();
    assert.ok(await page.locator('#chart .axis').count() >= 2);
  },

  // An alarm's page shows its history: the timeline, its uptime figures
  // as the API computes them, and each incident with its duration.
  async alarmhistory(page) {
    const svc = 'api/services/web.a';
    assert.equal((await api(`${svc}?timeout=3600`, { method: 'POST' })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api(`${svc}?timeout=0`, { method: 'POST' })).status, 200);
    await until('incident 1 open', async () =>
      (await api('api/alarms/web/incidents')).body?.incidents?.length === 1, 15000);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api(`${svc}?timeout=3600`, { method: 'POST' })).status, 200);
    let incident = null;
    await until('incident 1 closed', async () => {
      incident = (await api('api/alarms/web/incidents')).body?.incidents?.[0];
      return incident?.closed != null;
    }, 15000);
    const up = (await api('api/alarms/web/uptime?windows=24h')).body.windows[0];
    assert.equal(up.incidents, 1);
    // A maintenance window from now on, after the incident: the bar's
    // foot marks today blue.
    const at = (m) => new Date(Date.now() + m * 60000).toISOString();
    const made = await api('api/maintenance', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'move', alarms: ['web'], start: at(0), end: at(10) }),
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await until('some maintenance time', async () =>
      (await api('api/alarms/web/uptime?windows=24h')).body?.windows?.[0]?.maintenance_ms > 0);
    await page.goto(`${url}#/alarm/web`);
    await page.locator('#alarm-history summary').click();
    await page.locator('#alarm-timeline rect.maintenance').first().waitFor();
    assert.match(await page.locator('#alarm-timeline rect.maintenance title').first().textContent(),
      /^maintenance on \d{4}-\d{2}-\d{2} \(UTC\): /);
    await page.locator('#alarm-timeline rect.error').waitFor();
    const day = page.locator('#alarm-uptime tr[data-window="24h"]');
    await day.waitFor();
    const cells = await day.locator('td').allInnerTexts();
    assert.equal(cells.length, 6, cells.join('|'));
    assert.match(cells[0], /^\d+(\.\d+)? %$/);
    assert.notEqual(cells[0], '100 %', 'a second down is not rounded away');
    assert.equal(cells[2], '1', 'one incident in 24 h');
    assert.notEqual(cells[1], '0', 'the down time is shown');
    for (const w of ['7d', '30d', '90d', '365d']) {
      assert.equal(await page.locator(`#alarm-uptime tr[data-window="${w}"]`).count(), 1, w);
    }
    const item = page.locator('#alarm-incidents li[data-incident="1"]');
    const text = await item.innerText();
    assert.match(text, /^#1: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC.* to \d{4}-/);
    assert.match(await item.locator('.lasted').innerText(), /^\(\d+s\)$|^\(\d+ ms\)$/);
    assert.ok(text.includes(`first web.a`), text);
    assert.match(await page.locator('#alarm-history-sum').innerText(), /over 24 h/);
    // Another range redraws the alarm's timeline.
    await page.locator('#alarm-range').selectOption({ label: '365 days' });
    await until('redrawn', async () => (await page.locator('#alarm-timeline').getAttribute('aria-label')).includes('365d'));
    // On a phone the figures stay readable: the page itself does not
    // scroll sideways.
    await page.setViewportSize({ width: 375, height: 800 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1));
  },

  // A job's page lists its runs, each with its exit code and duration, and
  // the output behind a click, as text.
  async jobruns(page) {
    const post = (path, body) => api(path, { method: 'POST', body });
    await post('api/services/job.x?timeout=3600');
    await post('api/services/job.x/start');
    await new Promise((r) => setTimeout(r, 300));
    await post('api/services/job.x/exit/0');
    await post('api/services/job.x/start');
    await new Promise((r) => setTimeout(r, 300));
    await post('api/services/job.x/exit/3', 'copying\n<b>disk full</b>\n');
    await until('two runs', async () => (await api('api/services/job.x/runs')).body?.runs?.length === 2, 15000);
    await page.goto(`${url}#/services`);
    await row(page, 'job.x').locator('[data-open]').click();
    await page.locator('#run-list').waitFor();
    const rows = page.locator('#run-rows tr:not(.output)');
    await until('two rows', async () => (await rows.count()) === 2);
    assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.exit)), ['3', '0']);
    const failed = await rows.nth(0).locator('td').allInnerTexts();
    assert.match(failed[0], /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC/);
    assert.match(failed[2], /3$/);
    assert.match(failed[3], /^\d+ ms$|^\d+s$/);
    assert.equal(await rows.nth(1).locator('.exit').innerText(), '0');
    const out = page.locator('#run-rows tr.output pre');
    assert.ok(!(await out.isVisible()), 'the output waits for a click');
    await rows.nth(0).getByRole('button', { name: 'output' }).click();
    await out.waitFor();
    assert.equal((await out.textContent()).trimEnd(), 'copying\n<b>disk full</b>');
    assert.equal(await out.locator('b').count(), 0, 'output is text, not markup');
    assert.equal(await rows.nth(1).getByRole('button').count(), 0, 'a run with no output offers none');
    // The service's uptime figures too.
    await page.locator('#uptime tr[data-window="30d"]').waitFor();
  },

  // Double-click a timeout, type 1h30m, Enter: 5 400 000 ms.
  async timeout(page) {
    await api('api/services/edit.me?timeout=60', { method: 'POST' });
    await page.goto(`${url}#/services`);
    const cell = row(page, 'edit.me').locator('.c-timeout');
    await cell.waitFor();
    await cell.locator('.edit').dblclick();
    const input = cell.getByRole('textbox');
    await input.fill('1h30m');
    await input.press('Enter');
    await until('timeout 5400000', async () => (await service('edit.me'))?.timeout === 5400000);
    await page.locator('.row[data-name="edit.me"] .c-timeout', { hasText: '1h 30m' }).waitFor();
    // The keyboard path: focus the timeout, Enter, type, Enter.
    await cell.locator('.edit').focus();
    await page.keyboard.press('Enter');
    await cell.getByRole('textbox').fill('auto');
    await cell.getByRole('textbox').press('Enter');
    await until('timeout auto', async () => (await service('edit.me'))?.timeout === -2);
  },

  // An alarm page lists exactly its services; the home page lists alarms
  // and the beat chart shows a service's intervals.
  async alarm(page) {
    for (const n of ['web.a', 'web.b', 'db.x', 'other']) {
      await api(`api/services/${n}?timeout=60`, { method: 'POST' });
    }
    await page.goto(url);
    await page.locator('[data-alarm="web"]').waitFor();
    await page.locator('[data-alarm="db"]').waitFor();
    await page.locator('[data-alarm="web"]').click();
    await row(page, 'web.b').waitFor();
    const names = await page.locator('.row').evaluateAll((rows) => rows.map((r) => r.dataset.name).sort());
    assert.deepEqual(names, ['web.a', 'web.b']);
    assert.match(await page.locator('#list-title').innerText(), /web/);
    // A new member appears live on the alarm page; others do not.
    await udp('web.c.beat:1|c\nnot.web.beat:1|c\n');
    await row(page, 'web.c').waitFor();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await row(page, 'not.web').count(), 0);
    // The chart.
    await row(page, 'web.a').locator('[data-open]').click();
    await page.locator('#detail').waitFor();
    assert.equal(await page.locator('#detail-name').innerText(), 'web.a');
  },

  // An alarm's page names its alerts and, once asked, sends a marked test
  // to every alerter of one, showing what each receiver answered.
  // tests/ui.rs checks what the receivers got.
  async testalert(page) {
    await api('api/services/web.a?timeout=60', { method: 'POST' });
    await api('api/services/quiet.a?timeout=60', { method: 'POST' });
    await page.goto(`${url}#/alarm/web`);
    await page.locator('#alert-list', { hasText: 'ops (webhook, ntfy)' }).waitFor();
    const button = page.getByRole('button', { name: 'Send test alert: ops' });
    // Dismissing the question sends nothing.
    page.once('dialog', (d) => d.dismiss());
    await button.click();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await page.locator('#test-results li').count(), 0);
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await button.click();
    await page.locator('#test-results li.error').waitFor();
    assert.match(asked, /every alerter of "ops" \(webhook, ntfy\)/);
    const lines = await page.locator('#test-results li').allInnerTexts();
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.equal(lines[0], 'webhook: delivered');
    assert.match(lines[1], /^ntfy: not delivered: .*HTTP 400.*topic is gone/);
    assert.ok(await button.isEnabled(), 'the button is usable again');
    // An alarm that fires no alerts says so and offers no test.
    await page.goto(`${url}#/alarm/quiet`);
    await page.locator('#alert-list', { hasText: 'This alarm fires no alerts.' }).waitFor();
    assert.equal(await page.locator('[data-test-alert]').count(), 0);
  },

  // Served through nginx under /monitoring/lovebeat/, websocket included.
  async proxy(page) {
    assert.match(url, /\/monitoring\/lovebeat\/$/);
    const resp = await page.goto(`${url}#/services`);
    assert.match(resp.headers()['content-security-policy'] || '', /frame-ancestors 'none'/);
    assert.equal(resp.headers()['x-content-type-options'], 'nosniff');
    await page.locator('#live.on').waitFor();
    await udp('via.proxy.beat:1|c\n');
    await row(page, 'via.proxy').waitFor();
    await row(page, 'via.proxy').getByRole('checkbox').check();
    await page.getByRole('button', { name: /Mute/ }).first().click();
    await until('muted through the proxy', async () => (await service('via.proxy'))?.state === 'muted');
    await page.locator('.row[data-name="via.proxy"] .state.muted').waitFor();
    // The link an alert carries (public_url + alarms/<name>) opens the
    // alarm's page, under the prefix too.
    await page.goto(`${url}alarms/via`);
    await page.locator('#list-title', { hasText: 'via' }).waitFor();
    assert.match(page.url(), /\/monitoring\/lovebeat\/#\/alarm\/via$/);
    await row(page, 'via.proxy').waitFor();
  },

  // A page of another site (localhost is another site than 127.0.0.1)
  // posts a form and a no-cors fetch to the daemon: both arrive and are
  // refused, and nothing changes.
  async crosssite(page) {
    const evil = process.env.LOVEBEAT_EVIL;
    assert.ok(evil, 'LOVEBEAT_EVIL names the other site\'s page');
    const answered = new Map();
    page.on('response', (r) => {
      for (const n of ['csrf.form', 'csrf.fetch']) {
        if (r.url().includes(`/api/services/${n}`)) answered.set(n, r.status());
      }
    });
    await page.goto(evil);
    await until('both forged requests answered', async () => answered.size === 2);
    assert.equal(answered.get('csrf.form'), 403);
    assert.equal(answered.get('csrf.fetch'), 403);
    assert.equal(await service('csrf.form'), null);
    assert.equal(await service('csrf.fetch'), null);
  },

  // An auto service's chart draws the timeout learned before each
  // interval as a step line.
  async autochart(page) {
    for (let i = 0; i < 4; i += 1) {
      await api('api/services/auto.chart?timeout=auto', { method: 'POST' });
      await new Promise((r) => setTimeout(r, 1100));
    }
    const svc = (await api('api/services/auto.chart?details=1')).body.service;
    assert.equal(svc.beat_history.length, 3);
    assert.equal(svc.learned_timeouts.length, 3);
    await page.goto(`${url}#/services`);
    await row(page, 'auto.chart').locator('[data-open]').click();
    await page.locator('#chart polyline.learned').waitFor();
    const points = await page.locator('#chart polyline.learned').getAttribute('points');
    // Two steps (the first interval had nothing learned before it).
    assert.equal(points.trim().split(/\s+/).length, 4, points);
    assert.match(await page.locator('#chart-cap').innerText(), /learned before each/);
  },

  // 50 000 services: only the visible rows exist, and a filter narrows them.
  async many(page) {
    const n = 50000;
    for (let i = 0; i < n; i += 100) {
      let lines = '';
      for (let j = i; j < i + 100; j += 1) lines += `many.s${j}.beat:1|c\n`;
      await udp(lines);
      if (i % 5000 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await until('50 000 services', async () => {
      const r = await api('api/status', { headers: { Accept: 'application/json' } });
      return r.body.num_ok === n;
    }, 20000);
    await page.goto(`${url}#/services`);
    await page.locator('#count', { hasText: `${n} shown` }).waitFor({ timeout: 15000 });
    const rows = await page.locator('.row').count();
    assert.ok(rows > 5 && rows < 200, `${rows} rows in the DOM`);
    await page.locator('#filter').fill('many.s4999');
    await page.locator('#count', { hasText: /^11 shown/ }).waitFor();
    await page.locator('#viewport').evaluate((v) => { v.scrollTop = 0; });
    await page.locator('#filter').fill('');
    // Scrolled once the whole list is back: scrolled sooner, the viewport
    // still holds 11 rows and stays at the top. Names sort by their
    // numbers' value: the last is many.s49999.
    await page.locator('#count', { hasText: `${n} shown` }).waitFor();
    await page.locator('#viewport').evaluate((v) => { v.scrollTop = v.scrollHeight; });
    await page.locator('.row[data-name="many.s49999"]').waitFor();
  },

  // Job monitoring: the schedule in words, a running job, the failure
  // output, snooze from the page.
  async jobs(page) {
    const post = (path, body, headers = {}) => api(path, { method: 'POST', body, headers });
    await post('api/services/nightly.backup?schedule=0%203%20*%20*%20*&tz=Europe/Stockholm&grace=10m');
    await post('api/services/etl.load?timeout=3600');
    await post('api/services/etl.load/exit/3', 'loading rows\nERROR: disk full on /data\n');
    await post('api/services/long.run/start');
    await page.goto(`${url}#/services`);
    const timeout = row(page, 'nightly.backup').locator('.c-timeout');
    await timeout.waitFor();
    assert.match(await timeout.innerText(), /every day at 03:00 Europe\/Stockholm/);
    assert.match(await timeout.innerText(), /due by/);
    assert.match(await row(page, 'etl.load').locator('.c-state').innerText(), /exit 3/);
    assert.match(await row(page, 'long.run').locator('.c-state').innerText(), /running/);
    await row(page, 'etl.load').locator('[data-open]').click();
    await page.locator('#failure').waitFor();
    assert.match(await page.locator('#failure-output').innerText(), /ERROR: disk full on \/data/);
    assert.match(await page.locator('#failure-head').innerText(), /exit 3/);
    // The beat chart names a line only when one is drawn: a schedule has
    // no timeout, and no run has a max_runtime here.
    assert.equal(await page.locator('#chart-cap').innerText(), 'Recent intervals between beats (bars) against the timeout (line).');
    await row(page, 'nightly.backup').locator('[data-open]').click();
    await until('caption of a schedule', async () => (await page.locator('#chart-cap').innerText()) === 'Recent intervals between beats.');
    // Snooze from the page.
    await row(page, 'etl.load').getByRole('checkbox').check();
    page.once('dialog', (d) => d.accept('2h'));
    await page.getByRole('button', { name: /Snooze/ }).click();
    await until('snoozed', async () => (await service('etl.load'))?.muted_until > Date.now() + 7000000);
    await page.locator('.row[data-name="etl.load"] .state.muted').waitFor();
    assert.match(await row(page, 'etl.load').locator('.c-muted').innerText(), /until/);
    // A schedule typed into the timeout editor.
    await row(page, 'long.run').locator('.c-timeout .edit').dblclick();
    await row(page, 'long.run').locator('.c-timeout').getByRole('textbox').fill('30 2 * * mon-fri');
    await row(page, 'long.run').locator('.c-timeout').getByRole('textbox').press('Enter');
    await until('scheduled', async () => (await service('long.run'))?.schedule === '30 2 * * mon-fri');
    await page.locator('.row[data-name="long.run"] .c-timeout', { hasText: 'every Monday to Friday at 02:30 UTC' }).waitFor();
  },

  // With read keys the page asks for a key once and keeps it.
  async keys(page) {
    let asked = 0;
    page.on('dialog', (d) => { asked += 1; d.accept('reader'); });
    await page.goto(`${url}#/services`);
    await row(page, 'secret.svc').waitFor();
    await page.locator('#live.on').waitFor();
    assert.equal(asked, 1);
    await page.reload();
    await row(page, 'secret.svc').waitFor();
    assert.equal(asked, 1, 'the key is remembered');
    assert.equal(await page.evaluate(() => localStorage.getItem('lovebeat.key')), 'reader');
  },

  // A public status page (README, "Status pages") under nginx's prefix:
  // its stylesheet applies within its CSP, the bars have a cell per day
  // with the day in words on hover, the incident and the outage show, no
  // service's name does, and on a phone it fits the screen with the last
  // 30 days of each bar.
  async status(page) {
    await page.goto(url);
    await page.locator('#banner').waitFor();
    assert.equal(await page.locator('#banner').innerText(), 'Partial outage');
    const bg = await page.locator('#banner').evaluate((e) => getComputedStyle(e).backgroundColor);
    assert.notEqual(bg, 'rgba(0, 0, 0, 0)', 'the stylesheet applies');
    assert.equal(await page.locator('.bar').count(), 2);
    assert.equal(await page.locator('.bar .day').count(), 2 * 90);
    const title = await page.locator('.bar .day').last().getAttribute('title');
    assert.match(title, /^\d{4}-\d{2}-\d{2}: /);
    assert.match(await page.locator('.incidents.ongoing').innerText(), /Payments are slow/);
    assert.match(await page.locator('#entry-website .state').innerText(), /Down/);
    const text = await page.locator('body').innerText();
    assert.doesNotMatch(text, /secretsvc|hidden-alarm|leaked/);
    const cellWidth = await page.locator('.bar .day').last().evaluate((e) => e.getBoundingClientRect().width);
    assert.ok(cellWidth > 1, `cells are visible (${cellWidth}px)`);
    await page.setViewportSize({ width: 360, height: 740 });
    const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
    assert.ok(fits, 'no sideways scrolling on a phone');
    const shown = await page.locator('#entry-website .bar .day:visible').count();
    assert.equal(shown, 30, 'a phone shows the last 30 days');
  },

  // The status page screenshot in docs/ (docs/README.md): a demo history
  // of a year (tests/ui/demo-status.py), an incident resolved with a
  // postmortem and one going on.
  async statusdocs(page) {
    const post = (path, body) => fetch(new URL(path, apiBase), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    for (const s of ['web.front', 'api.v1', 'pay.gateway', 'db.main']) {
      await post(`api/services/${s}?timeout=3600`);
    }
    const made = await (await post('api/status_pages/acme/incidents', {
      title: 'Slow checkouts', status: 'identified', text: 'Card payments take up to a minute: a provider is slow.',
    })).json();
    await post(`api/status_pages/acme/incidents/${made.id}/updates`, {
      status: 'resolved', text: 'Payments are fast again.', postmortem: 'A provider throttled us; we now spread the load over two.',
    });
    await post('api/status_pages/acme/incidents', {
      title: 'Delayed e-mail receipts', status: 'monitoring', text: 'Receipts arrive up to ten minutes late; a fix is out and we are watching.',
    });
    await page.setViewportSize({ width: 1000, height: 900 });
    await page.goto(url);
    await page.locator('#banner').waitFor();
    await page.screenshot({ path: 'docs/status-page.png', fullPage: true });
  },

  // The screenshots in docs/: the home page and an alarm page with a chart.
  async docs(page) {
    await page.setViewportSize({ width: 1200, height: 720 });
    await page.goto(url);
    await page.locator('[data-alarm]').first().waitFor();
    await page.screenshot({ path: 'docs/ui-home.png' });
    await page.goto(`${url}#/alarm/backup`);
    await row(page, 'backup.db1').waitFor();
    await row(page, 'backup.db1').locator('[data-open]').click();
    await page.locator('#chart rect').first().waitFor();
    await page.screenshot({ path: 'docs/ui-alarm.png' });
    await page.goto(`${url}#/alarm/cron`);
    await row(page, 'cron.nightly-report').waitFor();
    await row(page, 'cron.nightly-report').locator('[data-open]').click();
    await page.locator('#failure-output').waitFor();
    // Its runs (tests/ui/demo-history.py wrote two weeks), the failed
    // one's output open.
    await page.locator('#run-rows tr').first().waitFor();
    await page.locator('#run-rows tr').first().getByRole('button', { name: 'output' }).click();
    await page.locator('#run-list').scrollIntoViewIfNeeded();
    await page.screenshot({ path: 'docs/ui-job.png' });
    // The history timeline (tests/ui/demo-history.py wrote thirty days).
    await page.goto(`${url}#/alarm/web`);
    await row(page, 'web.payments').waitFor();
    await row(page, 'web.payments').locator('[data-open]').click();
    await page.locator('#timeline-range').selectOption({ label: '30 days' });
    await page.locator('#timeline rect.error').first().waitFor();
    await new Promise((r) => setTimeout(r, 300));
    await page.screenshot({ path: 'docs/ui-history.png' });
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario '${scenario}'; one of: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
// Whatever the UI does must pass its Content-Security-Policy: a blocked
// script, style or connection fails the scenario.
const violations = [];
await page.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
  });
});
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  console.error(`console: ${m.text()}`);
  if (/Content.Security.Policy|CSP violation/i.test(m.text())) violations.push(m.text());
});
let failed = false;
try {
  await run(page);
  assert.deepEqual(violations, [], 'the UI breaks its Content-Security-Policy');
} catch (e) {
  failed = true;
  mkdirSync(shots, { recursive: true });
  const path = `${shots}/${scenario}.png`;
  await page.screenshot({ path, fullPage: true }).catch(() => {});
  console.error(`scenario ${scenario} failed: ${e.stack || e}\nscreenshot: ${path}`);
}
await browser.close();
process.exit(failed ? 1 : 0);
