// Dashboard configuration: the only file to edit when the pages are deployed somewhere new.
//
// apiBase: where the JSON API lives. "" means the same origin as the page (the local shim, or the
//   dashboard function behind the same APIG group). For an OBS static website, the APIG URL, e.g.
//   "https://0123456789abcdef.apic.cn-north-4.huaweicloudapis.com" (no trailing slash needed).
// Every other key is optional; app.js has the defaults shown here.
window.IOT_CONFIG = {
  apiBase: "",
  refreshSeconds: 5, // how often both pages refresh in place
  staleAfterSeconds: 300, // silent longer than this: marked "Stale"
  offlineAfterSeconds: 3600, // silent longer than this: marked "Offline"
  historyLimit: 1000, // readings per metric fetched for the charts (the API's maximum is 1000)
  recentReadings: 50, // rows in the device page's table of recent readings
  // The device page's initial chart window: "hour", "day", "week", or "auto": the shortest of the three
  // that shows (at least 80 % of) the device's readings. A window picked on the page wins (?window=).
  defaultWindow: "auto",
};
