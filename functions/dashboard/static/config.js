// Dashboard configuration: the only file to edit when the pages are deployed somewhere new.
//
// apiBase: where the JSON API lives. "" means the same origin as the page (the local shim, or the
//   dashboard function behind the same APIG group). For an OBS static website, the APIG URL, e.g.
//   "https://0123456789abcdef.apic.cn-north-4.huaweicloudapis.com" (no trailing slash needed).
// Every other key is optional; app.js has the defaults shown here.
window.IOT_CONFIG = {
  apiBase: "",
  refreshSeconds: 5, // how often the pages refresh in place
  staleAfterSeconds: 300, // silent longer than this: marked "Stale"
  offlineAfterSeconds: 3600, // silent longer than this: marked "Offline"
  readingsPerPage: 100, // rows per page of the device page's readings table (the API's maximum is 1000)
  // The device page's initial window: "hour", "day", "week" (7 days), "month" (30 days), "year", or
  // "auto": the shortest of them that holds at least 80 % of the device's readings of the last year.
  // A window picked on the page wins (?window=, or ?from=&to= for a range of one's own).
  defaultWindow: "auto",
};
