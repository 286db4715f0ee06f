// The alerts page: the rules in force (each deletable), a form to add a threshold or no-data rule, and
// the alerts that have closed, newest first, page by page.
//
// Changing rules needs an admin credential when auth is on; the API's 400 for a rule it cannot take is
// shown next to the form as it is, since it names the field and what it accepts.
(function () {
  "use strict";
  const D = window.IotDashboard;

  const HISTORY_PAGE = 50;
  const CONDITION_TEXT = { ">": ">", ">=": "≥", "<": "<", "<=": "≤" };
  const ADMIN_NEEDED = "Changing rules needs an admin key: this tab's key may only read. Sign out and sign in with an admin key.";

  D.alertsPage = function alertsPage() {
    let poller = null;
    let rulesShown = null; // what the rules table shows, to rebuild it only when it changed
    const history = { rows: [], next: null, older: false, shown: null };

    function byId(id) {
      return document.getElementById(id);
    }

    // A short message above the rules: what the last change did, or why it did not happen.
    function say(text, failed) {
      const message = byId("rules-message");
      message.hidden = !text;
      message.classList.toggle("error-text", !!failed);
      D.setText(message, text || "");
    }

    function refusal(error, what) {
      if (error.status === 403) return ADMIN_NEEDED;
      return what + ": " + error.message + ".";
    }

    // ---- the rules -------------------------------------------------------------------------------
    function valueText(value, metric) {
      return typeof value === "number" ? D.formatValue(value, metric) : "–";
    }

    // What makes the rule open an alert, in words: "Temperature > 50 °C for 30 s, clears at or below 45 °C".
    function describeRule(rule) {
      if (rule.kind === "no_data") return "No reading for " + D.formatDuration(rule.after_seconds || 0);
      const label = D.metricInfo(rule.metric_type).label;
      let text = label + " " + (CONDITION_TEXT[rule.condition] || rule.condition) + " " + valueText(rule.threshold, rule.metric_type);
      if (rule.for_seconds) text += " for " + D.formatDuration(rule.for_seconds);
      if (typeof rule.clear_threshold === "number") {
        const side = String(rule.condition).startsWith(">") ? "at or below" : "at or above";
        text += ", clears " + side + " " + valueText(rule.clear_threshold, rule.metric_type);
      }
      return text;
    }

    async function deleteRule(rule, button) {
      if (!window.confirm("Delete the rule “" + rule.name + "”? Its open alerts close.")) return;
      button.disabled = true;
      try {
        const answer = await D.sendJson("DELETE", "/api/alert-rules/" + encodeURIComponent(rule.id));
        const closed = typeof answer.alerts_closed === "number" ? answer.alerts_closed : 0;
        say("Deleted the rule “" + rule.name + "”" + (closed ? "; " + D.formatNumber(closed) + (closed === 1 ? " open alert" : " open alerts") + " closed." : "."));
      } catch (error) {
        if (!(error instanceof D.ApiError)) console.error(error);
        say(refusal(error, "The rule “" + rule.name + "” was not deleted"), true);
        button.disabled = false;
      }
      if (poller) poller.now();
    }

    function ruleRow(rule) {
      const remove = D.element("button", { type: "button", class: "button button-danger", "aria-label": "Delete rule " + rule.name }, "Delete");
      remove.addEventListener("click", () => deleteRule(rule, remove));
      const created = D.parseTime(rule.created_at);
      return D.element(
        "tr",
        { dataset: { ruleId: String(rule.id), kind: rule.kind } },
        D.element("td", { class: "cell-rule", dataset: { label: "Name" }, text: rule.name }),
        D.element("td", { dataset: { label: "Devices" } }, D.element("code", { text: rule.device })),
        D.element("td", { class: "cell-condition", dataset: { label: "Opens when" }, text: describeRule(rule) }),
        D.element("td", { dataset: { label: "Created" }, title: D.formatFullDateTime(created), text: D.formatDateTime(created) }),
        D.element("td", { class: "cell-actions" }, remove),
      );
    }

    function showRules(rules) {
      const signature = JSON.stringify(rules);
      byId("rules-empty").hidden = rules.length > 0;
      byId("rules").hidden = rules.length === 0;
      D.setText(byId("rules-count"), rules.length ? D.formatNumber(rules.length) + (rules.length === 1 ? " rule" : " rules") : "");
      if (signature === rulesShown) return; // a delete button the reader is about to press stays put
      rulesShown = signature;
      byId("rules").tBodies[0].replaceChildren(...rules.map(ruleRow));
    }

    // ---- the form ----------------------------------------------------------------------------------
    const form = byId("rule-form");
    const kind = byId("rule-kind");
    const metricSelect = byId("rule-metric");
    metricSelect.replaceChildren(
      ...Object.keys(D.METRICS).map((metric) => D.element("option", { value: metric, text: D.metricInfo(metric).label + " (" + metric + ")" })),
    );

    function showKind() {
      byId("threshold-fields").hidden = kind.value !== "threshold";
      byId("no-data-fields").hidden = kind.value !== "no_data";
    }
    kind.addEventListener("change", showKind);
    showKind();

    // A number field's value for the request: undefined when empty (the API's default, or its "is
    // required"), NaN for text the browser could not read as a number.
    function numberField(id) {
      const input = byId(id);
      if (input.validity && input.validity.badInput) return NaN;
      return input.value.trim() === "" ? undefined : Number(input.value);
    }

    // The request body, or a message naming a field the browser already knows is not a number.
    function ruleBody() {
      const body = { name: byId("rule-name").value, kind: kind.value };
      const device = byId("rule-device").value.trim();
      if (device) body.device = device;
      const numbers =
        kind.value === "no_data"
          ? [["after_seconds", "rule-after", "Silent for"]]
          : [
              ["threshold", "rule-threshold", "Threshold"],
              ["for_seconds", "rule-for", "For at least"],
              ["clear_threshold", "rule-clear", "Clears at"],
            ];
      if (kind.value === "threshold") {
        body.metric_type = metricSelect.value;
        body.condition = byId("rule-condition").value;
      }
      for (const [field, id, label] of numbers) {
        const value = numberField(id);
        if (Number.isNaN(value)) return { problem: label + ": enter a number." };
        if (value !== undefined) body[field] = value;
      }
      return { body };
    }

    function showFormError(text) {
      const error = byId("rule-error");
      error.hidden = !text;
      D.setText(error, text || "");
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const { body, problem } = ruleBody();
      if (problem) return showFormError(problem);
      const submit = byId("rule-submit");
      submit.disabled = true;
      showFormError("");
      try {
        const rule = await D.sendJson("POST", "/api/alert-rules", body);
        for (const id of ["rule-name", "rule-threshold", "rule-for", "rule-clear", "rule-after"]) byId(id).value = "";
        say("Added the rule “" + rule.name + "”: " + describeRule(rule) + ".");
      } catch (error) {
        if (!(error instanceof D.ApiError)) console.error(error);
        showFormError(error.status === 400 ? error.message : refusal(error, "The rule was not added"));
      } finally {
        submit.disabled = false;
      }
      if (poller) poller.now();
    });

    // ---- closed alerts -----------------------------------------------------------------------------
    function historyPath(cursor) {
      const params = new URLSearchParams({ state: "closed", limit: String(HISTORY_PAGE) });
      if (cursor) params.set("cursor", cursor);
      return "/api/alerts?" + params.toString();
    }

    async function historyPage(cursor) {
      const body = await D.getJson(historyPath(cursor));
      if (!Array.isArray(body.alerts)) throw new D.ApiError("the answer has no list of alerts", 200);
      return { alerts: body.alerts, next: body.has_more && body.next_cursor ? body.next_cursor : null };
    }

    function historyRow(alert) {
      const opened = D.parseTime(alert.opened_at);
      const closed = D.parseTime(alert.closed_at);
      const acknowledged = D.parseTime(alert.acknowledged_at);
      const metric = D.element("span", { class: "metric-name" }, D.element("span", { class: "dot", "aria-hidden": "true" }), D.alertMetricText(alert));
      if (alert.metric_type) metric.style.setProperty("--metric-color", D.metricInfo(alert.metric_type).color);
      return D.element(
        "tr",
        { dataset: { alertId: String(alert.id), deviceId: alert.device_id } },
        D.element("td", { dataset: { label: "Device" } }, D.element("a", { href: D.deviceHref(alert.device_id), class: "device-link" }, alert.device_id)),
        D.element("td", { dataset: { label: "Metric" } }, metric),
        D.element("td", { class: "cell-rule", dataset: { label: "Rule" }, text: alert.rule_name }),
        D.element("td", { dataset: { label: "Opened" }, title: D.formatFullDateTime(opened), text: D.formatDateTime(opened) }),
        D.element("td", { dataset: { label: "Closed" }, title: D.formatFullDateTime(closed), text: D.formatDateTime(closed) }),
        D.element("td", { dataset: { label: "Open for" }, text: opened != null && closed != null ? D.formatDuration(Math.max(0, (closed - opened) / 1000)) : "–" }),
        D.element("td", { class: "num", dataset: { label: "Value" }, text: D.alertValueText(alert) }),
        D.element("td", {
          dataset: { label: "Acknowledged" },
          title: acknowledged != null ? D.formatFullDateTime(acknowledged) : "",
          text: acknowledged != null ? "✓ " + (alert.acknowledged_by || "") : "–",
        }),
      );
    }

    function showHistory() {
      const rows = history.rows;
      byId("history-empty").hidden = rows.length > 0;
      byId("closed-alerts").hidden = rows.length === 0;
      byId("history-more").hidden = !history.next;
      D.setText(byId("history-count"), rows.length ? "newest first, " + D.formatNumber(rows.length) + " shown" : "");
      const signature = JSON.stringify(rows);
      if (signature === history.shown) return;
      history.shown = signature;
      byId("closed-alerts").tBodies[0].replaceChildren(...rows.map(historyRow));
    }

    byId("history-older").addEventListener("click", async () => {
      const button = byId("history-older");
      if (!history.next) return;
      button.disabled = true;
      try {
        const page = await historyPage(history.next);
        history.rows = history.rows.concat(page.alerts);
        history.next = page.next;
        history.older = true; // the refresh leaves the listing alone from now on
        showHistory();
      } catch (error) {
        D.setText(byId("history-count"), "Older alerts could not be loaded: " + error.message + ".");
      } finally {
        button.disabled = false;
      }
    });

    // ---- loading -----------------------------------------------------------------------------------
    async function load() {
      const [rules, closed] = await Promise.all([D.getJson("/api/alert-rules"), history.older ? null : historyPage(null)]);
      if (!Array.isArray(rules.rules)) throw new D.ApiError("the answer has no list of rules", 200);
      byId("loading").hidden = true;
      showRules(rules.rules);
      if (closed) {
        history.rows = closed.alerts;
        history.next = closed.next;
      }
      showHistory();
    }

    poller = D.poll(load);
  };

  D.alertsPage(); // the page's scripts come last in <body>: the elements are there (no inline script)
})();
