// The overview's pipeline section: what GET /api/pipeline says about the pipeline itself.
// Readings stored per minute and messages rejected come from the database, the consumer's lag from
// Kafka; the messages queued per second are worked out here, between two refreshes, from the topic's
// end offsets (which only grow). overview.js fetches the answer with its other requests and hands it
// to D.showPipeline; an API without /api/pipeline (404) leaves the section hidden.
(function () {
  "use strict";
  const D = window.IotDashboard;

  let previous = null; // { total, atMs } of the last answer with Kafka's counts

  function byId(id) {
    return document.getElementById(id);
  }

  function show(id, text) {
    D.setText(byId(id), text);
  }

  // Messages queued per second since the previous refresh, or null before there are two samples (or
  // when the topic was recreated and its offsets started again). Each process asks Kafka at most every
  // few seconds, so a sample is dated when Kafka was asked, not when the answer was sent.
  function queuedPerSecond(kafka, answeredMs) {
    if (!kafka || !kafka.available || typeof kafka.messages_total !== "number") return null;
    const sample = { total: kafka.messages_total, atMs: answeredMs - (kafka.checked_seconds_ago || 0) * 1000 };
    const before = previous;
    previous = sample;
    if (!before || sample.total < before.total || sample.atMs <= before.atMs) return null;
    return (sample.total - before.total) / ((sample.atMs - before.atMs) / 1000);
  }

  function perSecond(value) {
    return value == null ? "–" : value < 10 ? value.toFixed(1) : D.formatNumber(Math.round(value));
  }

  function lagText(body) {
    const kafka = body.kafka || {};
    if (!kafka.available) return "–";
    if (typeof body.lag === "number") return D.formatNumber(body.lag);
    const groups = kafka.groups || [];
    if (groups.length === 0) return "–";
    return groups.map((group) => group.group + ": " + D.formatNumber(group.lag)).join(", ");
  }

  function note(body) {
    const kafka = body.kafka || {};
    if (body.database && !body.database.available) {
      return "The database did not answer (" + (body.database.error || "no reason given") + "): nothing stored meanwhile.";
    }
    if (!kafka.available) return "Kafka did not answer (" + (kafka.error || "no reason given") + "): no lag or queue rate.";
    if ((kafka.groups || []).length === 0) return "No consumer group has committed offsets on " + kafka.topic + " yet.";
    return "Stored readings per minute of their timestamp, over the last " + body.window_minutes + " minutes.";
  }

  // One bar per minute, as tall as that minute's stored readings against the window's busiest minute.
  function drawChart(perMinute) {
    const chart = byId("pipeline-chart");
    const busiest = Math.max(1, ...perMinute.map((minute) => minute.count));
    const bars = perMinute.map((minute) => {
      const bar = D.element("span", {
        class: "pipeline-bar",
        title: D.formatDateTime(D.parseTime(minute.minute)) + ": " + D.formatNumber(minute.count) + " readings stored",
      });
      bar.style.height = Math.round((minute.count / busiest) * 100) + "%"; // CSSOM: allowed by the CSP
      return bar;
    });
    chart.replaceChildren(...bars);
    chart.setAttribute(
      "aria-label",
      "Readings stored per minute: " + perMinute.map((minute) => minute.count).join(", "),
    );
  }

  function render(body) {
    const stored = body.stored || {};
    const rejected = body.rejected || {};
    show("pipeline-in", perSecond(queuedPerSecond(body.kafka, D.parseTime(body.generated_at) || Date.now())));
    show("pipeline-stored", perSecond(typeof stored.per_second === "number" ? stored.per_second : null));
    show("pipeline-lag", lagText(body));
    const recent = (rejected.per_minute || []).reduce((sum, minute) => sum + minute.count, 0);
    show("pipeline-rejected", D.formatNumber(recent));
    show("pipeline-note", note(body));
    drawChart(stored.per_minute || []);
  }

  // ``settled``: the Promise.allSettled outcome of GET /api/pipeline.
  D.showPipeline = function showPipeline(settled) {
    const section = byId("pipeline");
    if (settled.status === "fulfilled") {
      section.hidden = false;
      render(settled.value);
    } else if (settled.reason && (settled.reason.status === 404 || settled.reason.status === 403)) {
      section.hidden = true; // an API without the view, or a credential it is not for
    } else {
      show("pipeline-note", "The pipeline view is unavailable: " + (settled.reason ? settled.reason.message : "no answer"));
    }
  };
})();
