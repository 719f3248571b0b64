// callscribe's page: the live feed (/api/live, Server-Sent Events) applied to the server-rendered page.
// No build step, no library. The list page moves calls between "On now" and "Recent"; a call's page adds each
// transcript to its speaker's lane: interim text faint, replaced in place by the final text. Finals are keyed by
// track and start, so what the server rendered, a replay and a reconnect never show one twice. A final spoken in
// another language than the call's gets a small tag. The server tags the stored finals by the call's language
// (the one most stored words were spoken in); as finals come live, the page tags them all again by the language
// most words on the page were in, counting each final's words for its first language (the feed has no words).
// Alerts (ALERT_RULES): the list page counts them per call; a call's page lists them above the lanes and marks
// the words that fired each one in its speaker's lane, from the stored alerts on load and from `call.alert` live.
// The feed has no word times, so the words are found by their text in the track's finals the alert's time spans.
"use strict";

(function () {
  const status = document.getElementById("feed-status");

  function say(text, kind) {
    if (status) {
      status.textContent = text;
      status.dataset.kind = kind;
    }
  }

  // The feed's state in words for whoever watches, from the reason's code (the part before its colon).
  const RELOADED_AT = "callscribe.reloaded-at"; // when this tab last reloaded for events the feed no longer had
  const RELOAD_AGAIN_AFTER_MS = 60000;
  let missed = false; // some events were not replayed and the page did not reload for them

  function behind(reason) {
    if (reason.startsWith("replay_window")) {
      // Away longer than the feed keeps events (a restart, a laptop asleep): the page is rendered from the
      // database, which has what the feed no longer does, so it reloads. Once a minute at most: a gap that
      // comes back at once is said instead, never a reloading loop.
      const last = Number(sessionStorage.getItem(RELOADED_AT) || 0);
      if (Date.now() - last > RELOAD_AGAIN_AFTER_MS) {
        sessionStorage.setItem(RELOADED_AT, String(Date.now()));
        say("catching up: reloading the page…", "behind");
        location.reload();
        return;
      }
      missed = true;
      say("some earlier events were not replayed: reload the page to see them", "behind");
    } else if (reason.startsWith("redis_unreachable")) {
      say("delayed: the server cannot reach Redis; what happens meanwhile shows when it can", "behind");
    } else {
      say("behind: " + reason, "behind");
    }
  }

  function live() {
    // A call that has ended is not live: the feed stays open only for what batch may still add.
    const ended = status && status.dataset.ended;
    if (ended) say(ended, "ended");
    else say(missed ? "live · some earlier events were not replayed: reload the page to see them" : "live", "live");
  }

  function open(url, handlers) {
    // EventSource reconnects by itself and sends Last-Event-ID: the feed replays what was missed, once.
    const source = new EventSource(url);
    source.onopen = live;
    source.onerror = () => say("reconnecting…", "behind");
    source.addEventListener("feed.behind", (e) => behind(JSON.parse(e.data).reason));
    source.addEventListener("feed.live", live);
    source.addEventListener("feed.dropped", () => say("reconnecting…", "behind"));
    // The service is stopping: EventSource reconnects by itself after the frame's `retry:` (to another process,
    // or to this one once it is back) with Last-Event-ID, so nothing is missed.
    source.addEventListener("feed.closing", () => say("reconnecting (the service restarts)…", "behind"));
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => handle(JSON.parse(e.data)));
    }
    return source;
  }

  function clock(seconds) {
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const rest = (seconds % 60).toFixed(2).padStart(5, "0");
    return (hours ? hours + ":" : "") + String(minutes).padStart(2, "0") + ":" + rest;
  }

  function duration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const minutes = Math.floor(total / 60);
    return minutes + ":" + String(total % 60).padStart(2, "0");
  }

  // Durations: ticking while a call is on, fixed once it ended.
  function tick() {
    for (const row of document.querySelectorAll("[data-started-at]")) {
      const started = Date.parse(row.dataset.startedAt);
      const cell = row.querySelector(".duration");
      if (!cell || Number.isNaN(started)) continue;
      const ended = cell.querySelector("[data-ended-at]");
      const until = ended ? Date.parse(ended.dataset.endedAt) : Date.now();
      cell.dataset.seconds = String(Math.floor((until - started) / 1000));
      (ended || cell).textContent = duration(until - started);
    }
  }

  const FIRST_LINE_CHARS = 60;

  function shortened(text, limit) {
    text = text.split(/\s+/).filter(Boolean).join(" ");
    if (text.length <= limit) return text;
    let cut = text.slice(0, limit - 1);
    if (cut.includes(" ")) cut = cut.slice(0, cut.lastIndexOf(" "));
    return cut.replace(/[,.;:]+$/, "") + "…";
  }

  function worstState(states) {
    const values = Object.values(states);
    for (const worst of ["paused", "spooled", "reconnecting", "handed_over"]) {
      if (values.includes(worst)) return worst;
    }
    return values.length ? "streaming" : "starting";
  }

  // What each state means (the page's legend), for the cell's title: the colour is never the only sign.
  const STATES = JSON.parse((document.getElementById("calls") || document.body).dataset.states || "{}");

  function setState(cell, state) {
    cell.textContent = state;
    cell.className = "state state-" + state;
    if (STATES[state]) cell.title = STATES[state];
    else cell.removeAttribute("title");
  }

  // --- the list of calls ------------------------------------------------------------------------------
  function listPage(section) {
    const active = document.querySelector("#active tbody");
    const recent = document.querySelector("#recent tbody");
    const empty = document.getElementById("no-active");
    const states = {};

    function row(call) {
      const tr = document.createElement("tr");
      tr.dataset.callSid = call.call_sid;
      tr.dataset.startedAt = call.started_at;
      const link = document.createElement("a");
      link.href = "/calls/" + encodeURIComponent(call.call_sid);
      link.textContent = call.from_number || "unknown";
      const to = document.createElement("span");
      to.className = "to";
      to.textContent = " → " + call.to_number;
      const started = document.createElement("time");
      started.className = "started";
      started.dateTime = call.started_at;
      started.textContent = call.started_at.slice(0, 19).replace("T", " ");
      const firstLine = document.createElement("div");
      firstLine.className = "first-line";
      const cells = [[link, to, firstLine], [call.direction], [], ["starting"], [started], []];
      for (const content of cells) {
        const td = document.createElement("td");
        td.append(...content);
        tr.append(td);
      }
      tr.children[2].className = "duration";
      setState(tr.children[3], "starting");
      tr.children[5].className = "alerts";
      tr.children[5].dataset.count = "0";
      return tr;
    }

    function refreshEmpty() {
      empty.hidden = active.children.length > 0;
    }

    function countAlert(event) {
      const tr = section.querySelector(`tr[data-call-sid="${CSS.escape(event.call_sid)}"]`);
      const cell = tr && tr.querySelector(".alerts");
      if (!cell) return;
      const count = Number(cell.dataset.count || 0) + 1;
      cell.dataset.count = String(count);
      const badge = document.createElement("span");
      badge.className = "alert-count";
      badge.textContent = String(count);
      cell.replaceChildren(badge);
    }

    const since = section.dataset.since;
    open("/api/live?last_event_id=" + encodeURIComponent(since), {
      "call.alert": countAlert,
      "call.started": (call) => {
        if (!active.querySelector(`tr[data-call-sid="${CSS.escape(call.call_sid)}"]`)) {
          active.prepend(row(call));
          refreshEmpty();
        }
      },
      "call.state": (event) => {
        const tr = active.querySelector(`tr[data-call-sid="${CSS.escape(event.call_sid)}"]`);
        states[event.call_sid] = Object.assign(states[event.call_sid] || {}, { [event.track]: event.state });
        if (tr) setState(tr.querySelector(".state"), worstState(states[event.call_sid]));
      },
      transcript: (t) => {
        // A call's first line: its first final, shortened as the server shortens it (FIRST_LINE_CHARS).
        const tr = active.querySelector(`tr[data-call-sid="${CSS.escape(t.call_sid)}"]`);
        const line = tr && tr.querySelector(".first-line");
        if (t.is_final && line && !line.textContent) line.textContent = shortened(t.text, FIRST_LINE_CHARS);
      },
      "call.ended": (event) => {
        const tr = active.querySelector(`tr[data-call-sid="${CSS.escape(event.call_sid)}"]`);
        if (!tr) return;
        const ended = document.createElement("time");
        ended.dataset.endedAt = event.ended_at;
        tr.querySelector(".duration").replaceChildren(ended);
        setState(tr.querySelector(".state"), event.ended_by);
        const coverage = document.createElement("td");
        coverage.className = "coverage";
        coverage.textContent = "counted: reload to see";
        tr.append(coverage); // the recent table's column: the database has the call's coverage, the feed not
        if (section.dataset.searched) tr.remove(); // the table below holds search results: only they belong there
        else recent.prepend(tr);
        refreshEmpty();
        tick();
      },
    });
  }

  // --- one call ---------------------------------------------------------------------------------------
  function callPage(section) {
    const lanes = document.getElementById("lanes");
    const stateCell = document.getElementById("call-state");
    const states = {};

    function callLanguage() {
      const words = {};
      let best = null;
      for (const item of lanes.querySelectorAll("li.final[data-language]")) {
        const language = item.dataset.language;
        words[language] = (words[language] || 0) + Number(item.dataset.words || 1);
        if (best === null || words[language] > words[best]) best = language;
      }
      return best;
    }

    function tagLanguages() {
      const language = callLanguage();
      for (const item of lanes.querySelectorAll("li.final")) {
        const own = item.dataset.language;
        const tag = item.querySelector(".lang");
        if (tag && tag.textContent === own && own !== language) continue;
        if (tag) {
          tag.nextSibling.remove(); // the space after it
          tag.remove();
        }
        if (!own || own === language) continue;
        const created = document.createElement("span");
        created.className = "lang";
        created.title = "spoken in " + own;
        created.textContent = own;
        const text = item.querySelector(".text");
        item.insertBefore(created, text);
        item.insertBefore(document.createTextNode(" "), text);
      }
    }

    function lane(speaker) {
      for (const existing of lanes.querySelectorAll(".lane")) {
        if (existing.dataset.speaker === speaker) return existing.querySelector(".utterances");
      }
      const created = document.createElement("section");
      created.className = "lane";
      created.dataset.speaker = speaker;
      created.setAttribute("aria-label", speaker);
      const heading = document.createElement("h2");
      heading.textContent = speaker;
      const list = document.createElement("ol");
      list.className = "utterances";
      created.append(heading, list);
      lanes.append(created);
      colour();
      return list;
    }

    function colour() {
      lanes.querySelectorAll(".lane").forEach((l, i) => l.classList.add("lane-" + (i % 4)));
    }

    function fill(item, transcript) {
      const time = document.createElement("time");
      time.textContent = clock(transcript.start);
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = transcript.text;
      const own = (transcript.languages || [])[0];
      delete item.dataset.language; // an interim line is filled again by each result
      delete item.dataset.words;
      if (own) {
        text.lang = own;
        item.dataset.language = own;
        item.dataset.words = String(transcript.text.split(/\s+/).filter(Boolean).length);
      }
      item.replaceChildren(time, " ", text);
      item.dataset.start = String(transcript.start);
      item.dataset.end = String(transcript.end);
    }

    // --- alerts: listed, and their words marked in the lane ---
    const alertList = document.getElementById("alerts");
    const alertSection = document.getElementById("alerts-section");

    function words(text) {
      // As the server compares them (service/alert_rules.py `words_of`): case folded, punctuation dropped.
      return text.toLowerCase().replace(/[^\p{L}\p{N}\s]/gu, "");
    }

    function mark(alert) {
      if (alert.dataset.kind !== "said") return;
      const id = alert.dataset.alertId;
      if (lanes.querySelector(`mark[data-alert-id="${CSS.escape(id)}"]`)) return; // marked already
      const start = Number(alert.dataset.start);
      const end = Number(alert.dataset.end);
      const finals = [...lanes.querySelectorAll("li.final")].filter(
        (item) =>
          item.dataset.key.startsWith(alert.dataset.track + ":") &&
          Number(item.dataset.start) <= end + 0.01 &&
          Number(item.dataset.end || item.dataset.start) >= start - 0.01,
      );
      finals.sort((a, b) => Number(a.dataset.start) - Number(b.dataset.start));
      // Every word of those finals in order, then the run that says the alert's words.
      const tokens = [];
      for (const item of finals) {
        const text = item.querySelector(".text");
        const parts = text.textContent.split(/(\s+)/);
        parts.forEach((part, index) => {
          if (part.trim()) tokens.push({ text, parts, index, word: words(part) });
        });
      }
      const wanted = words(alert.dataset.text).split(/\s+/).filter(Boolean);
      const tokenWords = tokens.filter((token) => token.word);
      for (let at = 0; wanted.length && at + wanted.length <= tokenWords.length; at++) {
        if (wanted.every((word, i) => tokenWords[at + i].word === word)) {
          const chosen = new Set(tokenWords.slice(at, at + wanted.length));
          for (const text of new Set([...chosen].map((token) => token.text))) {
            const pieces = tokens.filter((token) => token.text === text);
            const parts = pieces[0].parts;
            const marked = new Set(pieces.filter((token) => chosen.has(token)).map((token) => token.index));
            text.replaceChildren(
              ...parts.map((part, index) => {
                if (!marked.has(index)) return document.createTextNode(part);
                const highlight = document.createElement("mark");
                highlight.className = "alert-words";
                highlight.dataset.alertId = id;
                highlight.title = alert.dataset.rule;
                highlight.textContent = part;
                return highlight;
              }),
            );
            text.closest("li").classList.add("alerted");
          }
          return;
        }
      }
    }

    function addAlert(event) {
      if (alertList.querySelector(`li[data-alert-id="${CSS.escape(event.alert_id)}"]`)) return; // shown already
      const item = document.createElement("li");
      item.className = "alert alert-" + event.kind;
      Object.assign(item.dataset, {
        alertId: event.alert_id, rule: event.rule, kind: event.kind, track: event.track,
        start: String(event.start), end: String(event.end), text: event.text,
      });
      const rule = document.createElement("strong");
      rule.className = "rule";
      rule.textContent = event.rule;
      if (event.kind === "said") {
        const time = document.createElement("time");
        time.textContent = clock(event.start);
        const said = document.createElement("q");
        said.className = "said";
        said.textContent = event.text;
        item.append(rule, " ", time, " " + event.speaker + ": ", said);
      } else {
        item.append(rule, " not said by " + (event.speaker || "anyone") + " within " + event.end + " s");
      }
      const later = [...alertList.children].find((other) => Number(other.dataset.start) > event.start);
      alertList.insertBefore(item, later || null);
      alertSection.hidden = false;
      mark(item);
    }

    function markAll() {
      for (const alert of alertList.querySelectorAll("li.alert")) mark(alert);
    }

    function place(list, item) {
      // Finals in spoken order; the interim stays last.
      const start = Number(item.dataset.start);
      for (const other of list.querySelectorAll("li.final")) {
        if (other !== item && Number(other.dataset.start) > start) {
          list.insertBefore(item, other);
          return;
        }
      }
      const interim = list.querySelector("li.interim");
      list.insertBefore(item, interim && interim !== item ? interim : null);
    }

    function transcript(t) {
      const list = lane(t.speaker);
      const interim = list.querySelector(`li.interim[data-track="${CSS.escape(t.track)}"]`);
      if (!t.is_final) {
        const item = interim || document.createElement("li");
        item.className = "interim";
        item.dataset.track = t.track;
        fill(item, t);
        if (!interim) list.append(item);
        return;
      }
      const key = t.track + ":" + Math.round(t.start * 1000);
      if (lanes.querySelector(`li.final[data-key="${CSS.escape(key)}"]`)) {
        if (interim) interim.remove(); // shown already (rendered from the database, or before a reconnect)
        return;
      }
      const item = interim || document.createElement("li");
      item.className = "final";
      item.dataset.key = key;
      delete item.dataset.track;
      fill(item, t);
      place(list, item);
      tagLanguages();
      markAll(); // an alert whose words came in a later final (a replay) is marked once they are here
    }

    const sid = section.dataset.callSid;
    const since = encodeURIComponent(section.dataset.since);
    open("/api/live?call_sid=" + encodeURIComponent(sid) + "&last_event_id=" + since, {
      transcript: transcript,
      "call.alert": addAlert,
      "call.state": (event) => {
        states[event.track] = event.state;
        setState(stateCell, worstState(states));
      },
      "call.ended": (event) => {
        setState(stateCell, "ended");
        if (status) {
          // A page opened after the end has the server's words for it (batch may still add some): kept.
          if (!status.dataset.ended) status.dataset.ended = "call ended";
          live();
        }
        // Only a page opened while the call was on lacks its coverage; one opened after has it from the database
        // (and the feed replays the end to it).
        const coverage = document.getElementById("coverage");
        if (coverage && coverage.classList.contains("coverage-unknown")) {
          coverage.textContent = "Coverage is counted as the call ends: reload the page to see it";
        }
        const ended = document.createElement("time");
        ended.dataset.endedAt = event.ended_at;
        section.querySelector(".duration").replaceChildren(ended);
        for (const interim of lanes.querySelectorAll("li.interim")) interim.remove();
        tick();
      },
    });
    colour();
    markAll();
  }

  const list = document.getElementById("calls");
  const call = document.getElementById("call");
  if (list) listPage(list);
  if (call) callPage(call);
  tick();
  setInterval(tick, 1000);
})();
