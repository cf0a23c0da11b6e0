/* calltrack site tag __VERSION__: shows each visitor a tracking number from the counter's pool.
 * <script async src="https://<ingest>/tag.js?counter=<id>"></script>, next to Metrica's tag.
 * Takes the visitor's ClientID from Metrica (ym(counter, 'getClientID', cb)), asks the session API
 * (/v1/number) for a number, swaps the counter's static number in text and tel: links (nodes added
 * later too), renews the lease while the page is open and releases it on leave. Any failure, or no
 * answer within the bound, leaves the static number shown. Never throws into the page; its only
 * global is window.CalltrackTag. Plain ES5 with fetch/MutationObserver when the browser has them. */
(function (w, d) {
  "use strict";
  var VERSION = "__VERSION__", YM_WAIT = 4000, API_WAIT = 4000, MIN_RENEW = 5;
  var NUMBER = /\+?\d[\d\u00a0 ()\-.]{5,22}\d/g, SKIP = /^(SCRIPT|STYLE|TEXTAREA|NOSCRIPT|TEMPLATE|INPUT)$/;
  if (w.CalltrackTag) return;
  var tag = { version: VERSION, state: "starting", number: null, errors: 0 };
  w.CalltrackTag = tag;

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { tag.errors++; tag.error = String(e && e.message || e); }
    };
  }
  function digits(text) { return String(text).replace(/\D/g, ""); }

  var script = d.currentScript || (function () {
    var all = d.getElementsByTagName("script");
    for (var i = all.length - 1; i >= 0; i--) if (/\/tag\.js(\?|$)/.test(all[i].src)) return all[i];
    return null;
  })();
  var src = script && script.src ? script.src : "";
  var base = src.replace(/\/tag\.js.*$/, "");
  var counter = (/[?&]counter=(\d{1,19})(&|$)/.exec(src) || [])[1];

  var ids = {}, config = { replace: [], selector: null }, held = null, swaps = [], timer = null, observer = null;

  // --- matching: the static numbers in any usual spelling ---------------------------------------
  // A candidate matches a static number when its digits are the number's (+7 495 000-00-00,
  // tel:+74950000000) or its national form behind a trunk prefix 8 or 0 (8 (495) 000-00-00).
  function forms(e164) {
    var all = digits(e164), out = {};
    out[all] = true;
    for (var cc = 1; cc <= 3 && all.length - cc >= 6; cc++) {
      out["8" + all.slice(cc)] = true;
      out["0" + all.slice(cc)] = true;
      if (cc === 1 && all.charAt(0) === "7") out[all.slice(cc)] = true;
    }
    return out;
  }
  var wanted = {};
  function wants(text) { return wanted[digits(text)] === true || (config.selector && digits(text).length >= 7); }
  // The new number written in the old one's spelling: the same separators, the same trunk prefix.
  function spell(old, number) {
    var od = digits(old), nd = digits(number), cc = nd.length + 1 - od.length, fill = null, i = 0;
    if (od.length === nd.length && od.charAt(0) === nd.charAt(0)) fill = nd;
    else if (/^[08]/.test(od) && cc >= 1 && cc <= 3) fill = od.charAt(0) + nd.slice(cc);
    else if (nd.charAt(0) === "7" && od.length === nd.length - 1) fill = nd.slice(1);
    if (fill === null) return number;
    return old.replace(/\d/g, function () { return fill.charAt(i++); });
  }

  // --- swapping, and undoing it ------------------------------------------------------------------
  function record(node, attr, before, after) {
    if (before === after) return;
    if (attr) node.setAttribute(attr, after); else node.nodeValue = after;
    swaps.push({ node: node, attr: attr, before: before, after: after });
  }
  // Inside an element with data-calltrack-skip nothing is swapped; with a selector, only inside its matches.
  function inScope(el) {
    var matched = !config.selector;
    for (; el && el.nodeType === 1; el = el.parentNode) {
      if (el.hasAttribute("data-calltrack-skip")) return false;
      if (!matched && el.matches && el.matches(config.selector)) matched = true;
    }
    return matched;
  }
  function swapText(node) {
    var text = node.nodeValue, parent = node.parentNode;
    if (!text || !parent || SKIP.test(parent.nodeName) || !inScope(parent)) return;
    var out = text.replace(NUMBER, function (m) { return wants(m) ? spell(m, held) : m; });
    record(node, null, text, out);
  }
  function swapLink(el) {
    var href = el.getAttribute("href") || "";
    var m = /^\s*tel:(.*)$/i.exec(href);
    if (!m || !inScope(el) || !wants(m[1])) return;
    record(el, "href", href, "tel:" + (m[1].charAt(0) === "+" ? held : spell(m[1], held)));
  }
  function swapIn(root) {
    if (!held || !root) return;
    if (root.nodeType === 3) return swapText(root);
    if (root.nodeType !== 1 && root.nodeType !== 9 && root.nodeType !== 11) return;
    if (root.nodeType === 1 && SKIP.test(root.nodeName)) return;
    if (root.nodeType === 1 && root.nodeName === "A") swapLink(root);
    var links = root.querySelectorAll ? root.querySelectorAll("a[href]") : [];
    for (var i = 0; i < links.length; i++) swapLink(links[i]);
    var walker = d.createTreeWalker(root, 4, null, false), texts = [], n;
    while ((n = walker.nextNode())) texts.push(n);
    for (var j = 0; j < texts.length; j++) swapText(texts[j]);
  }
  function restore() {
    for (var i = swaps.length - 1; i >= 0; i--) {
      var s = swaps[i];
      try {
        if (s.attr) { if (s.node.getAttribute(s.attr) === s.after) s.node.setAttribute(s.attr, s.before); }
        else if (s.node.nodeValue === s.after) s.node.nodeValue = s.before;
      } catch (e) { tag.errors++; }
    }
    swaps = [];
  }
  // All or nothing: a swap that fails half-way is undone, the static numbers stay.
  function show(number) {
    try {
      restore();
      held = number;
      tag.number = number;
      if (number) swapIn(d.body || d.documentElement);
      tag.state = number ? "swapped" : "static";
    } catch (e) {
      tag.errors++;
      staticNumbers(String(e && e.message || e));
    }
  }
  // Why the static numbers are shown: tag.reason (an expected condition, not counted as an error).
  function staticNumbers(reason) {
    held = null;
    tag.number = null;
    restore();
    tag.state = "static";
    tag.reason = reason;
  }
  function watch() {
    if (observer || !w.MutationObserver) return;
    observer = new MutationObserver(safe(function (mutations) {
      if (!held) return;
      for (var i = 0; i < mutations.length; i++) {
        var added = mutations[i].addedNodes;
        for (var j = 0; j < added.length; j++) swapIn(added[j]);
      }
    }));
    observer.observe(d.documentElement, { childList: true, subtree: true });
  }

  // --- the session API ---------------------------------------------------------------------------
  function query(extra) {
    var parts = ["counter=" + counter];
    for (var k in ids) if (ids[k]) parts.push(k + "=" + encodeURIComponent(ids[k]));
    if (extra) parts.push("URL=" + encodeURIComponent(String(w.location.href).slice(0, 1024)));
    return parts.join("&");
  }
  function ask(done) {
    var finished = false, ctrl = w.AbortController ? new AbortController() : null;
    var finish = safe(function (answer) {
      if (finished) return;
      finished = true;
      if (ctrl && !answer) ctrl.abort();
      done(answer);
    });
    setTimeout(function () { finish(null); }, API_WAIT);
    w.fetch(base + "/v1/number?" + query(true), { credentials: "omit", signal: ctrl ? ctrl.signal : undefined })
      .then(function (r) { return r.ok ? r.json() : { failed: r.status }; })
      .then(finish, function () { finish(null); });
  }
  function answered(answer) {
    if (answer && answer.fallback) return staticNumbers("the session API answered the fallback number");
    if (!answer || typeof answer.number !== "string") {
      // No answer (slow, down, refused): the static numbers stay, or come back once the lease held
      // so far has run out (a fallback answer means the session holds no number: static at once).
      var why = answer && answer.failed ? "the session API answered " + answer.failed
        : "no answer from the session API in time";
      if (!held) return staticNumbers(why);
      tag.reason = why;
      schedule(MIN_RENEW, true);
      return;
    }
    config.replace = answer.replace || [];
    config.selector = answer.selector || null;
    wanted = {};
    for (var i = 0; i < config.replace.length; i++) {
      var f = forms(config.replace[i]);
      for (var k in f) wanted[k] = true;
    }
    if (answer.number !== held) show(answer.number);
    watch();
    var seconds = typeof answer.seconds === "number" ? answer.seconds : 0;
    tag.expires = Date.now() + seconds * 1000;
    schedule(Math.max(MIN_RENEW, Math.floor(seconds / 2)), false);
  }
  // Renew at half the lease; after a failed renewal, try again, and give the number up once its
  // lease has ended (it may be another visitor's by then).
  function schedule(seconds, retry) {
    clearTimeout(timer);
    if (retry && tag.expires && Date.now() >= tag.expires) return staticNumbers("the lease ended unrenewed");
    timer = setTimeout(safe(function () { ask(answered); }), seconds * 1000);
  }
  function release() {
    if (!held || !w.navigator.sendBeacon) return;
    var body = { counter: Number(counter) };
    for (var k in ids) if (ids[k]) body[k] = ids[k];
    w.navigator.sendBeacon(base + "/v1/number/release", JSON.stringify(body));
  }

  // --- the visitor: Metrica's ClientID, within a bound ---------------------------------------------
  function clientId(done) {
    var finished = false, started = Date.now();
    var finish = safe(function (id) {
      if (finished) return;
      finished = true;
      done(id && /^\d{1,40}$/.test(String(id)) ? String(id) : null);
    });
    setTimeout(function () { finish(null); }, YM_WAIT);
    (function poll() {
      if (finished) return;
      if (typeof w.ym === "function") {
        try { w.ym(Number(counter), "getClientID", finish); } catch (e) { finish(null); }
        return;
      }
      if (Date.now() - started < YM_WAIT) setTimeout(poll, 50);
    })();
  }

  var start = safe(function () {
    if (!counter || !base || !w.fetch) return staticNumbers("no counter, no script URL or no fetch");
    var yclid = /[?&]yclid=(\d{1,40})(&|$)/.exec(w.location.search);
    if (yclid) ids.Yclid = yclid[1];
    clientId(safe(function (id) {
      if (id) ids.ClientId = id;
      if (!ids.ClientId && !ids.Yclid) return staticNumbers("no ClientID from Metrica");
      tag.clientId = ids.ClientId || null;
      tag.state = "asking";
      ask(answered);
    }));
    w.addEventListener("pagehide", safe(function () {
      clearTimeout(timer);
      release();
    }));
    w.addEventListener("pageshow", safe(function (e) {
      if (e.persisted && (ids.ClientId || ids.Yclid)) ask(answered);
    }));
  });
  start();
})(window, document);
