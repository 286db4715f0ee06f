// The device page: latest values, a time-series chart per metric (uPlot) over a chosen window, and
// the recent readings. Everything updates in place; the charts get new data with setData.
//
// History comes from /api/device/<id>/history (newest first, at most 1000 per call). The page loads
// the newest `historyLimit` readings of each metric once, then fetches only the newest 100 of a metric
// whose latest timestamp changed, and reloads everything about once a minute (late data, deletions).
(function () {
  "use strict";
  const D = window.IotDashboard;

  const WINDOWS = { hour: 3600, day: 86400, week: 7 * 86400 };
  const WINDOW_TEXT = { hour: "the last hour", day: "the last day", week: "the last week" };
  // defaultWindow "auto": the shortest window that shows at least this share of the device's history,
  // measured in time from its oldest loaded reading to its newest.
  const AUTO_SHARE = 0.8;
  const INCREMENT = 100;
  const FULL_RELOAD_EVERY = 12; // refreshes
  // uPlot's time-axis formats, in 24-hour time: [tick step, format, then the date line when it changes].
  const TIME_TICKS = [
    [365 * 86400, "{YYYY}", null, null, null, null, null, null, 1],
    [28 * 86400, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [86400, "{D} {MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
    [60, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
    [1, "{HH}:{mm}:{ss}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
  ];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]; // uPlot's names
  const AXIS_FONT = "12px -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Arial, 'Liberation Sans', sans-serif";
  const LABEL_GAP = 12; // px, at least, between two neighbouring time labels

  // The least distance between two x-axis ticks: half the widest label (the first tick's date carries
  // the year, "28 May 2026") plus half the widest label next to it ("28 May", "00:00:00") plus a gap.
  // With uPlot's default (50 px), "28 Nov 2026" could run into "29 Nov", which then read as "9 Nov".
  let xSpace = null;
  function xTickSpace() {
    if (xSpace == null) {
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.font = AXIS_FONT;
      const width = (text) => ctx.measureText(text).width;
      const month = Math.max(...MONTHS.map((name) => width(name)));
      const withYear = width("28 ") + month + width(" 2026");
      const neighbour = Math.max(width("28 ") + month, width("00:00:00"));
      xSpace = Math.ceil((withYear + neighbour) / 2 + LABEL_GAP);
    }
    return xSpace;
  }

  // The device id from device.html?id=<id> (static website) or /device/<id> (the dashboard function).
  D.deviceIdFromLocation = function deviceIdFromLocation() {
    const id = new URLSearchParams(window.location.search).get("id");
    if (id) return id.trim();
    const match = /\/device\/([^/]+)\/?$/.exec(window.location.pathname);
    if (!match) return "";
    try {
      return decodeURIComponent(match[1]);
    } catch (_) {
      return match[1];
    }
  };

  // metric -> uPlot instance, for whoever wants to look (the browser tests do).
  D.charts = {};

  D.device = function device(deviceId) {
    const loading = document.getElementById("loading");
    const notFound = document.getElementById("not-found");
    const content = document.getElementById("content");

    if (!deviceId) {
      loading.hidden = true;
      notFound.replaceChildren(
        D.element("strong", { text: "No device chosen. " }),
        "Open a device from the ",
        D.element("a", { href: "/" }, "overview"),
        ".",
      );
      notFound.hidden = false;
      document.getElementById("connection").hidden = true;
      return;
    }

    document.getElementById("title").textContent = deviceId;
    document.title = deviceId + " · IoT Device Monitor";
    const base = "/api/device/" + encodeURIComponent(deviceId);

    const query = D.readQuery();
    // A window from the URL (the user chose it) wins; null: "auto", decided once the history is loaded.
    let windowKey = WINDOWS[query.get("window")]
      ? query.get("window")
      : WINDOWS[D.config.defaultWindow] ? D.config.defaultWindow : null;
    const hidden = new Set((query.get("hide") || "").split(",").filter(Boolean));

    const series = {}; // metric -> { points: Map(seconds -> value), newest, latest, capped }
    const cards = {}; // metric -> the chart card's parts
    const latestCards = {}; // metric -> the latest-value card's parts
    const chips = {}; // metric -> the filter chip
    let latest = null;
    let refreshes = 0;
    let tableKey = "";

    // ---- data ------------------------------------------------------------------------------------
    async function fetchHistory(metric, limit) {
      const body = await D.getJson(base + "/history?metric_type=" + encodeURIComponent(metric) + "&limit=" + limit);
      const rows = [];
      for (const row of body.data || []) {
        const ms = D.parseTime(row.timestamp);
        if (ms != null && typeof row.value === "number") rows.push([ms / 1000, row.value]);
      }
      return rows; // newest first
    }

    async function loadHistory(metric, full, latestStamp) {
      let known = series[metric];
      if (full || !known) {
        const rows = await fetchHistory(metric, D.config.historyLimit);
        series[metric] = {
          points: new Map(rows),
          newest: rows.length ? rows[0][0] : -Infinity,
          latest: latestStamp,
          capped: rows.length >= D.config.historyLimit,
        };
        return;
      }
      const rows = await fetchHistory(metric, INCREMENT);
      if (rows.length >= INCREMENT && rows[rows.length - 1][0] > known.newest) {
        return loadHistory(metric, true, latestStamp); // more arrived than one increment: reload
      }
      for (const [t, v] of rows) known.points.set(t, v);
      if (rows.length) known.newest = Math.max(known.newest, rows[0][0]);
      known.latest = latestStamp;
      if (known.points.size > 2 * D.config.historyLimit) {
        const keep = Array.from(known.points.keys()).sort((a, b) => b - a).slice(0, D.config.historyLimit);
        known.points = new Map(keep.map((t) => [t, known.points.get(t)]));
        known.capped = true;
      }
    }

    async function load() {
      try {
        latest = await D.getJson(base + "/latest");
      } catch (error) {
        if (error.status !== 404) throw error;
        latest = null;
        for (const metric of Object.keys(series)) delete series[metric];
        showNotFound();
        return;
      }
      refreshes += 1;
      const full = refreshes % FULL_RELOAD_EVERY === 1;
      const metrics = D.sortMetrics(Object.keys(latest.metrics || {}));
      await Promise.all(
        metrics.map((metric) => {
          const stamp = latest.metrics[metric].timestamp;
          const known = series[metric];
          if (full || !known) return loadHistory(metric, true, stamp);
          if (known.latest !== stamp) return loadHistory(metric, false, stamp);
          return null;
        }),
      );
      for (const metric of Object.keys(series)) {
        if (!metrics.includes(metric)) delete series[metric];
      }
      render(metrics);
    }

    function showNotFound() {
      loading.hidden = true;
      content.hidden = true;
      document.getElementById("device-status").hidden = true;
      document.getElementById("device-last").textContent = "";
      notFound.replaceChildren(
        D.element("strong", { text: "No readings from “" + deviceId + "”. " }),
        "The device has not reported yet, or its data was deleted. This page keeps checking every " +
          D.config.refreshSeconds + " s; the ",
        D.element("a", { href: "/" }, "overview"),
        " lists the devices that have reported.",
      );
      notFound.hidden = false;
    }

    // ---- rendering -------------------------------------------------------------------------------
    function render(metrics) {
      loading.hidden = true;
      notFound.hidden = true;
      content.hidden = false;
      renderHead();
      renderLatest(metrics);
      renderChips(metrics);
      renderCharts(metrics);
      renderTable(metrics);
    }

    function renderHead() {
      const last = D.parseTime(latest.last_updated);
      const badge = document.getElementById("device-status");
      D.setStatusBadge(badge, D.deviceStatus(last), last);
      badge.hidden = false;
      const line = document.getElementById("device-last");
      if (!line.firstChild) line.append("Last reported ", D.element("time", { id: "device-since" }));
      D.setSince(document.getElementById("device-since"), last);
    }

    function renderLatest(metrics) {
      const grid = document.getElementById("latest");
      metrics.forEach((metric, index) => {
        let card = latestCards[metric];
        const info = D.metricInfo(metric);
        if (!card) {
          card = {
            root: D.element("div", { class: "latest-card", dataset: { metric } }),
            value: D.element("span", { class: "latest-value" }),
            since: D.element("time", { class: "latest-since" }),
          };
          card.root.style.setProperty("--metric-color", info.color);
          card.root.append(D.element("span", { class: "latest-label", text: info.label }), card.value, card.since);
          latestCards[metric] = card;
        }
        if (grid.children[index] !== card.root) grid.insertBefore(card.root, grid.children[index] || null);
        const reading = latest.metrics[metric];
        D.setText(card.value, D.formatValue(reading.value, metric));
        card.value.dataset.value = String(reading.value);
        D.setSince(card.since, D.parseTime(reading.timestamp));
      });
      for (const metric of Object.keys(latestCards)) {
        if (!metrics.includes(metric)) {
          latestCards[metric].root.remove();
          delete latestCards[metric];
        }
      }
    }

    function renderChips(metrics) {
      const box = document.getElementById("metric-filter");
      metrics.forEach((metric, index) => {
        let chip = chips[metric];
        if (!chip) {
          const info = D.metricInfo(metric);
          const input = D.element("input", { type: "checkbox", value: metric });
          input.addEventListener("change", () => {
            if (input.checked) hidden.delete(metric);
            else hidden.add(metric);
            D.writeQuery({ hide: Array.from(hidden).sort().join(",") });
            render(D.sortMetrics(Object.keys(latest.metrics)));
          });
          chip = D.element("label", { class: "chip", dataset: { metric } }, input, D.element("span", { text: info.label }));
          chip.style.setProperty("--metric-color", info.color);
          chips[metric] = chip;
        }
        chip.firstChild.checked = !hidden.has(metric);
        if (box.children[index] !== chip) box.insertBefore(chip, box.children[index] || null);
      });
      for (const metric of Object.keys(chips)) {
        if (!metrics.includes(metric)) {
          chips[metric].remove();
          delete chips[metric];
        }
      }
      document.getElementById("no-metric").hidden = metrics.some((metric) => !hidden.has(metric));
    }

    // "auto": the shortest window that shows at least AUTO_SHARE of the time between the device's oldest
    // and newest loaded readings (all metrics), ending now; the week when none does. Null without data.
    function fittingWindow(now) {
      let oldest = Infinity;
      let newest = -Infinity;
      for (const known of Object.values(series)) {
        for (const t of known.points.keys()) {
          if (t < oldest) oldest = t;
          if (t > newest) newest = t;
        }
      }
      if (!Number.isFinite(oldest)) return null;
      const to = Math.max(now, newest);
      const span = newest - oldest;
      for (const key of Object.keys(WINDOWS)) {
        const from = to - WINDOWS[key];
        const share = span > 0 ? (newest - Math.max(oldest, from)) / span : newest >= from ? 1 : 0;
        if (share >= AUTO_SHARE) return key;
      }
      return "week";
    }

    // The chart's width: the box's content width (its clientWidth includes its padding).
    function chartWidth(box) {
      const style = window.getComputedStyle(box);
      return Math.max(200, Math.floor(box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)));
    }

    function chartHeight() {
      return window.innerWidth < 640 ? 180 : 220;
    }

    function newCard(metric) {
      const info = D.metricInfo(metric);
      const card = {
        root: D.element("article", { class: "panel chart-card", dataset: { metric } }),
        summary: D.element("span", { class: "chart-summary muted" }),
        box: D.element("div", { class: "chart-box" }),
        empty: D.element("div", { class: "chart-empty", hidden: true }),
        note: D.element("p", { class: "chart-note muted", hidden: true }),
        view: { from: 0, to: 1 },
        summaryText: "",
        chart: null,
      };
      card.root.style.setProperty("--metric-color", info.color);
      const title = D.element("h2", {}, D.element("span", { class: "dot", "aria-hidden": "true" }), info.label);
      if (info.unit) title.append(D.element("span", { class: "unit", text: info.unit }));
      card.root.append(D.element("div", { class: "panel-head" }, title, card.summary), card.box, card.note);
      card.box.append(card.empty);
      return card;
    }

    function newChart(metric, card, data) {
      const info = D.metricInfo(metric);
      const axis = {
        stroke: "#5b6474",
        font: AXIS_FONT,
        grid: { stroke: "#edf0f5", width: 1 },
        ticks: { stroke: "#dfe3ea", width: 1, size: 4 },
      };
      const options = {
        width: chartWidth(card.box),
        height: chartHeight(),
        cursor: { drag: { x: false, y: false }, points: { size: 8 } },
        legend: { show: false },
        scales: { x: { time: true, range: () => [card.view.from, card.view.to] } },
        series: [
          {},
          { label: info.label, stroke: info.color, width: 2, fill: info.color + "1a", points: { size: 5, fill: info.color } },
        ],
        axes: [{ ...axis, values: TIME_TICKS, space: xTickSpace() }, { ...axis, size: 64, values: (u, splits) => splits.map((v) => D.axisFormat.format(v)) }],
        hooks: {
          // Hovering a chart shows the reading under the cursor in place of the window's summary.
          setCursor: [
            (u) => {
              const index = u.cursor.idx;
              const hovering = index != null && u.data[1][index] != null;
              card.summary.classList.toggle("hovering", hovering);
              D.setText(
                card.summary,
                hovering ? D.formatDateTime(u.data[0][index] * 1000) + " · " + D.formatValue(u.data[1][index], metric) : card.summaryText,
              );
            },
          ],
        },
      };
      return new window.uPlot(options, data, card.box);
    }

    function windowData(metric, from) {
      const points = series[metric] ? Array.from(series[metric].points) : [];
      points.sort((a, b) => a[0] - b[0]);
      const xs = [];
      const ys = [];
      for (const [t, v] of points) {
        if (t >= from) {
          xs.push(t);
          ys.push(v);
        }
      }
      return [xs, ys];
    }

    function renderCharts(metrics) {
      const holder = document.getElementById("charts");
      const now = Date.now() / 1000;
      if (!windowKey) windowKey = fittingWindow(now); // "auto": once, when the first history is in
      const key = windowKey || "day";
      const span = WINDOWS[key];
      for (const button of document.querySelectorAll("#windows button")) {
        button.setAttribute("aria-pressed", String(button.dataset.window === key));
      }
      metrics.forEach((metric, index) => {
        let card = cards[metric];
        if (!card) card = cards[metric] = newCard(metric);
        if (holder.children[index] !== card.root) holder.insertBefore(card.root, holder.children[index] || null);
        card.root.hidden = hidden.has(metric);
        if (card.root.hidden) return;

        const known = series[metric];
        const to = Math.max(now, known && Number.isFinite(known.newest) ? known.newest : now);
        card.view = { from: to - span, to };
        const data = windowData(metric, card.view.from);
        if (!card.chart) {
          card.chart = newChart(metric, card, data);
          D.charts[metric] = card.chart;
        } else {
          card.chart.setData(data);
        }
        summarise(metric, card, data);
      });
      for (const metric of Object.keys(cards)) {
        if (!metrics.includes(metric)) {
          if (cards[metric].chart) cards[metric].chart.destroy();
          cards[metric].root.remove();
          delete cards[metric];
          delete D.charts[metric];
        }
      }
    }

    function summarise(metric, card, data) {
      const [xs, ys] = data;
      const info = D.metricInfo(metric);
      if (!ys.length) {
        card.summaryText = "no readings";
        const last = latest.metrics[metric] ? D.parseTime(latest.metrics[metric].timestamp) : null;
        card.empty.textContent =
          "No " + info.label.toLowerCase() + " readings in " + WINDOW_TEXT[windowKey || "day"] + "." +
          (last != null ? " The latest is from " + D.formatDateTime(last) + " (" + D.ago(last) + ")." : "");
        card.empty.hidden = false;
      } else {
        let min = Infinity;
        let max = -Infinity;
        let sum = 0;
        for (const y of ys) {
          min = Math.min(min, y);
          max = Math.max(max, y);
          sum += y;
        }
        card.summaryText =
          D.formatNumber(ys.length) + (ys.length === 1 ? " reading" : " readings") +
          " · min " + D.formatValue(min, metric) + " · max " + D.formatValue(max, metric) +
          " · avg " + D.formatValue(Math.round((sum / ys.length) * 100) / 100, metric);
        card.empty.hidden = true;
      }
      if (!card.summary.classList.contains("hovering")) D.setText(card.summary, card.summaryText);
      const known = series[metric];
      const oldest = xs.length ? xs[0] : null;
      const truncated = known && known.capped && oldest != null && oldest > card.view.from + 60;
      card.note.hidden = !truncated;
      if (truncated) {
        card.note.textContent =
          "Only the newest " + D.formatNumber(D.config.historyLimit) + " readings are loaded: the line starts at " +
          D.formatDateTime(oldest * 1000) + ".";
      }
    }

    function renderTable(metrics) {
      const shown = metrics.filter((metric) => !hidden.has(metric));
      const rows = [];
      for (const metric of shown) {
        for (const [t, v] of series[metric] ? series[metric].points : []) rows.push([t, metric, v]);
      }
      rows.sort((a, b) => b[0] - a[0] || a[1].localeCompare(b[1]));
      const newest = rows.slice(0, D.config.recentReadings);
      const key = newest.map((row) => row.join("|")).join(";");
      D.setText(
        document.getElementById("history-count"),
        newest.length ? "Newest " + newest.length + (shown.length < metrics.length ? ", selected metrics" : "") : "",
      );
      if (key === tableKey) return;
      tableKey = key;
      const body = document.querySelector("#history tbody");
      if (!newest.length) {
        body.replaceChildren(
          D.element("tr", { class: "empty-row" }, D.element("td", { colspan: "3", text: "No readings to show." })),
        );
        return;
      }
      body.replaceChildren(
        ...newest.map(([t, metric, value]) => {
          const info = D.metricInfo(metric);
          const label = D.element("span", { class: "metric-name" }, D.element("span", { class: "dot", "aria-hidden": "true" }), info.label);
          label.style.setProperty("--metric-color", info.color);
          return D.element(
            "tr",
            { dataset: { metric, ts: String(t) } },
            D.element("td", { dataset: { label: "Time" } }, D.element("time", { datetime: new Date(t * 1000).toISOString(), text: D.formatDateTime(t * 1000) })),
            D.element("td", { dataset: { label: "Metric" } }, label),
            D.element("td", { class: "num", dataset: { label: "Value", value: String(value) }, text: D.formatValue(value, metric) }),
          );
        }),
      );
    }

    // ---- controls --------------------------------------------------------------------------------
    document.getElementById("windows").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-window]");
      if (!button || button.dataset.window === windowKey) return;
      windowKey = button.dataset.window;
      D.writeQuery({ window: windowKey === D.config.defaultWindow ? "" : windowKey });
      if (latest) renderCharts(D.sortMetrics(Object.keys(latest.metrics)));
    });

    // Charts follow their card's width (phones, resized windows, a scrollbar appearing).
    const resize = new ResizeObserver(() => {
      for (const card of Object.values(cards)) {
        if (card.chart && !card.root.hidden && card.box.clientWidth > 0) {
          const size = { width: chartWidth(card.box), height: chartHeight() };
          if (size.width !== card.chart.width || size.height !== card.chart.height) card.chart.setSize(size);
        }
      }
    });
    resize.observe(document.getElementById("charts"));

    D.poll(load);
  };
})();
