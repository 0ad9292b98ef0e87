// MaiRust Admin UI: a single-page app on the public REST API (/api/v1), without
// framework or build step. The page is served with a strict Content-Security-Policy
// (no inline script or style), so everything here is built with createElement and
// textContent: no HTML string ever reaches the DOM, and every text that comes from the
// server (subjects, addresses, header values, audit details) is treated as hostile.
// A message's HTML is shown only in a sandboxed frame the server fills itself.
'use strict';

(function () {
  const API = '/api/v1';

  // ---------------------------------------------------------------------------------
  // State

  const state = {
    /** The session from GET/POST /api/v1/session: {user, admin, csrf_token, expires_at, ...}. */
    session: null,
    /** Incremented at every page render: an answer for an older page is dropped. */
    renderSeq: 0,
    /** The mail list to go back to from a message. */
    lastMailHash: '#/mail',
    /** The shell's parts while signed in. */
    shell: null,
  };

  // ---------------------------------------------------------------------------------
  // DOM helpers (no HTML parsing anywhere)

  const SAFE_URL = /^(#|\/(?!\/))/;
  const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction', 'xlink:href', 'poster', 'data']);

  /**
   * h('tag', {attr: value}, ...children): an element. Attribute values go through
   * setAttribute (never parsed as HTML); event handler attributes, style and srcdoc are
   * refused, and URLs must be same-origin paths or fragments. Children are nodes or
   * text (made text nodes); null, undefined and false are skipped; arrays are flattened.
   */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        const name = key.toLowerCase();
        if (name.startsWith('on') || name === 'style' || name === 'srcdoc') {
          throw new Error('refused attribute ' + key);
        }
        const text = value === true ? '' : String(value);
        if (URL_ATTRS.has(name) && !SAFE_URL.test(text)) {
          throw new Error('refused URL in ' + key);
        }
        el.setAttribute(key, text);
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function on(el, type, fn) {
    el.addEventListener(type, fn);
    return el;
  }

  /** A <button type="button"> running `fn` (async) with the button disabled meanwhile. */
  function button(label, fn, attrs) {
    const b = h('button', Object.assign({ type: 'button' }, attrs || {}), label);
    on(b, 'click', () => act(b, fn));
    return b;
  }

  /** A form whose submit runs `fn(form)` (async), its submit button disabled meanwhile. */
  function form(attrs, children, fn) {
    const f = h('form', attrs || {}, children);
    on(f, 'submit', (ev) => {
      ev.preventDefault();
      const submit = f.querySelector('button[type="submit"]');
      act(submit, () => fn(f));
    });
    return f;
  }

  let fieldSeq = 0;
  /** A labelled input: returns {wrap, input}. */
  function field(label, attrs, hint) {
    const id = 'f' + ++fieldSeq;
    const tag = (attrs && attrs.tag) || 'input';
    const a = Object.assign({ id }, attrs || {});
    delete a.tag;
    const options = a.options;
    delete a.options;
    if (tag === 'select') delete a.value;
    let hintEl = null;
    if (hint) {
      hintEl = h('span', { class: 'hint', id: id + '-hint' }, hint);
      a['aria-describedby'] = id + '-hint';
    }
    const input = h(tag, a);
    if (options) {
      for (const [value, text] of options) {
        const o = h('option', { value }, text);
        if (String(attrs.value || '') === value) o.selected = true;
        input.append(o);
      }
    }
    if (a.type === 'checkbox') {
      return { wrap: h('div', { class: 'field check' }, input, h('label', { for: id }, label), hintEl), input };
    }
    return { wrap: h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl), input };
  }

  function enc(s) {
    return encodeURIComponent(String(s));
  }

  function safeDecode(s) {
    try {
      return decodeURIComponent(s);
    } catch (_) {
      return s;
    }
  }

  // ---------------------------------------------------------------------------------
  // Formatting

  function fmtDate(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return h('time', { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    let s = Math.max(0, Math.round(Number(seconds)));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const hr = Math.floor(s / 3600);
    s -= hr * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    if (d) return `${d} d ${hr} h`;
    if (hr) return `${hr} h ${m} min`;
    if (m) return `${m} min ${s} s`;
    return `${s} s`;
  }

  function fmtNumber(n) {
    if (n === null || n === undefined) return '—';
    return Number(n).toLocaleString();
  }

  function yesNo(b) {
    return b ? 'Yes' : 'No';
  }

  function badge(text, kind) {
    return h('span', { class: 'badge' + (kind ? ' badge-' + kind : '') }, text);
  }

  /** RFC 3339 → the value of an <input type="datetime-local"> (local time). */
  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  /** An <input type="datetime-local"> value (local time) → RFC 3339 (UTC). */
  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  function words(text) {
    return String(text || '')
      .split(/[\s,]+/)
      .map((w) => w.trim())
      .filter(Boolean);
  }

  // ---------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || null;
    }
  }

  /** Thrown when the session ended: the sign-in form is already shown. */
  class SignedOut extends Error {}

  function queryString(query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) {
      if (v === null || v === undefined || v === '') continue;
      qs.append(k, String(v));
    }
    return qs.toString();
  }

  /**
   * Calls the API: `method` on `/api/v1` + `path`. Resolves to the JSON answer (null for
   * 204), rejects with an ApiError carrying the API's error message, or with SignedOut
   * after a 401 (the sign-in form is then shown) unless `opts.allow401`.
   */
  async function api(method, path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    if (method !== 'GET' && method !== 'HEAD' && state.session) {
      headers['X-CSRF-Token'] = state.session.csrf_token;
    }
    let url = API + path;
    const qs = queryString(opts.query);
    if (qs) url += '?' + qs;
    let res;
    try {
      res = await fetch(url, {
        method,
        headers,
        body,
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (e) {
      throw new ApiError(0, 'NETWORK', 'The server could not be reached (' + e.message + ').');
    }
    if (res.status === 401 && !opts.allow401) {
      sessionLost('Your session has ended. Sign in again.');
      throw new SignedOut('signed out');
    }
    if (res.status === 204) return null;
    let data = null;
    const type = res.headers.get('content-type') || '';
    if (type.includes('json')) {
      try {
        data = await res.json();
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data && data.error;
      // The session's token changed (signed in again in another tab): learn it, retry once.
      if (
        res.status === 403 &&
        !opts.retried &&
        state.session &&
        method !== 'GET' &&
        err &&
        /CSRF/.test(err.message || '')
      ) {
        const before = state.session.csrf_token;
        const who = state.session.user;
        if (await refreshSession() && state.session && state.session.csrf_token !== before) {
          if (state.session.user !== who) {
            // Another window signed this browser in as someone else: start over as them.
            startApp();
            throw new ApiError(409, 'SESSION_CHANGED', `This browser is now signed in as ${state.session.user} (in another window); nothing was changed.`);
          }
          return api(method, path, Object.assign({}, opts, { retried: true }));
        }
      }
      throw new ApiError(
        res.status,
        err && err.code ? err.code : 'HTTP_' + res.status,
        err && err.message ? err.message : `${res.status} ${res.statusText}`.trim(),
        err ? err.details : null,
      );
    }
    return data;
  }

  async function refreshSession() {
    try {
      const s = await api('GET', '/session', { allow401: true, retried: true });
      state.session = s;
      return true;
    } catch (_) {
      return false;
    }
  }

  // ---------------------------------------------------------------------------------
  // Messages to the user: the page's error (role=alert) and the status (aria-live)

  let pageError = null;
  let statusTimer = null;
  let announcedAt = 0;

  function clearError() {
    if (pageError) {
      pageError.replaceChildren();
      pageError.hidden = true;
    }
    for (const el of document.querySelectorAll('[aria-invalid="true"]')) {
      el.removeAttribute('aria-invalid');
    }
  }

  /** Shows what went wrong (the API's message) in the page's alert. */
  function report(e, where) {
    if (e instanceof SignedOut) return;
    const target = where || pageError;
    if (!(e instanceof ApiError)) console.error(e);
    const message = e instanceof ApiError ? e.message : 'Something went wrong: ' + (e && e.message);
    if (!target) {
      announce(message);
      return;
    }
    const parts = [h('p', {}, message)];
    if (e instanceof ApiError && Array.isArray(e.details) && e.details.length) {
      const more = e.details.filter((d) => !message.includes(String(d.message)));
      if (more.length) parts.push(h('ul', {}, more.map((d) => h('li', {}, `${d.field}: ${d.message}`))));
      for (const d of e.details) {
        for (const input of document.querySelectorAll('main [name]')) {
          if (input.getAttribute('name') === d.field) input.setAttribute('aria-invalid', 'true');
        }
      }
    }
    target.replaceChildren(...parts);
    if (e instanceof ApiError) target.setAttribute('data-code', e.code);
    target.hidden = false;
  }

  /** Announces `message` in the status region (polite live region, visible). */
  function announce(message) {
    const status = state.shell && state.shell.status;
    if (!status) return;
    status.textContent = message;
    status.hidden = false;
    announcedAt = Date.now();
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => {
      status.textContent = '';
      status.hidden = true;
    }, 10000);
  }

  /** Runs `fn`, with `btn` disabled meanwhile, reporting a failure in the page's alert. */
  async function act(btn, fn) {
    const hadFocus = btn && document.activeElement === btn;
    if (btn) btn.disabled = true;
    clearError();
    try {
      await fn();
    } catch (e) {
      report(e);
    } finally {
      if (btn) btn.disabled = false;
      // Keep keyboard users where they were: back on the button, or on the page's
      // heading when the button went away with a redrawn list.
      const active = document.activeElement;
      const lost = !active || active === document.body || !active.isConnected || (dialog && dialog.contains(active));
      if (hadFocus && lost) {
        if (btn.isConnected) btn.focus();
        else if (state.shell && state.shell.title.isConnected) state.shell.title.focus();
      }
    }
  }

  // ---------------------------------------------------------------------------------
  // Confirmation dialog (a <dialog>, so that a WebDriver test can click it)

  let dialog = null;

  function confirmAction(message, yesLabel) {
    if (!dialog) {
      const title = h('h2', { id: 'confirm-title' }, 'Please confirm');
      const text = h('p', { id: 'confirm-text', 'data-test': 'confirm-text' });
      const yes = h('button', { type: 'button', class: 'danger', 'data-test': 'confirm-yes' }, 'Yes');
      const no = h('button', { type: 'button', 'data-test': 'confirm-no' }, 'Cancel');
      dialog = h(
        'dialog',
        {
          'aria-labelledby': 'confirm-title',
          'aria-describedby': 'confirm-text',
          'data-test': 'confirm-dialog',
          class: 'confirm',
        },
        title,
        text,
        h('div', { class: 'actions' }, no, yes),
      );
      on(yes, 'click', () => dialog.close('yes'));
      on(no, 'click', () => dialog.close('no'));
      dialog.parts = { text, yes, no };
      document.body.append(dialog);
    }
    if (typeof dialog.showModal !== 'function') {
      return Promise.resolve(window.confirm(message));
    }
    const opener = document.activeElement;
    dialog.parts.text.textContent = message;
    dialog.parts.yes.textContent = yesLabel || 'Yes';
    dialog.returnValue = '';
    return new Promise((resolve) => {
      on(dialog, 'close', function done() {
        dialog.removeEventListener('close', done);
        if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
        // The opener may be disabled while its action runs: never leave focus in the
        // closed dialog (act() puts it back on the button).
        if (dialog.contains(document.activeElement)) document.activeElement.blur();
        resolve(dialog.returnValue === 'yes');
      });
      dialog.showModal();
      dialog.parts.no.focus();
    });
  }

  // ---------------------------------------------------------------------------------
  // Clipboard

  async function copyText(text, selectable) {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(text);
      announce('Copied to the clipboard.');
    } catch (_) {
      if (selectable) {
        const range = document.createRange();
        range.selectNodeContents(selectable);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      announce('Copying is not available here: the text is selected, press Ctrl+C (⌘C) to copy it.');
    }
  }

  // ---------------------------------------------------------------------------------
  // Tables

  /** A table in a horizontally scrolling wrapper: {wrap, table, tbody}. */
  function dataTable(caption, headers, attrs) {
    const tbody = h('tbody');
    const table = h(
      'table',
      attrs || {},
      h('caption', {}, caption),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((x) =>
            typeof x === 'string'
              ? h('th', { scope: 'col' }, x)
              : h('th', { scope: 'col', class: x.class }, x.label),
          ),
        ),
      ),
      tbody,
    );
    const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption }, table);
    return { wrap, table, tbody };
  }

  function td(content, cls) {
    return h('td', cls ? { class: cls } : {}, content);
  }

  /**
   * A list read page by page (`?limit=&cursor=`), with a "More" button:
   * {el, reload(query?)}. `row(item, list)` makes one <tr>.
   */
  function pagedList(opts) {
    const t = dataTable(opts.caption, opts.headers, opts.tableAttrs);
    const empty = h('p', { class: 'empty', hidden: true, 'data-test': (opts.test || 'list') + '-empty' }, opts.empty || 'Nothing here yet.');
    const more = h('button', { type: 'button', hidden: true, 'data-test': opts.moreTest || 'more' }, 'More');
    const pager = h('div', { class: 'pager' }, more);
    let cursor = null;
    let query = opts.query || {};
    let seq = 0;
    const list = {
      el: h('div', { class: 'paged', 'data-test': opts.test || null }, t.wrap, empty, pager),
      tbody: t.tbody,
      async reload(newQuery) {
        if (newQuery) query = newQuery;
        cursor = null;
        return load(true);
      },
    };
    async function load(reset) {
      const mine = ++seq;
      const q = Object.assign({}, query, { limit: opts.limit || 50 });
      if (!reset && cursor) q.cursor = cursor;
      const r = await api('GET', opts.path, { query: q });
      if (mine !== seq) return r;
      if (reset) t.tbody.replaceChildren();
      for (const item of r.data || []) t.tbody.append(opts.row(item, list));
      cursor = r.pagination ? r.pagination.cursor : null;
      more.hidden = !(r.pagination && r.pagination.has_more && cursor);
      const n = t.tbody.rows.length;
      empty.hidden = n > 0;
      t.wrap.hidden = n === 0;
      return r;
    }
    on(more, 'click', () =>
      act(more, async () => {
        const before = t.tbody.rows.length;
        await load(false);
        const added = t.tbody.rows.length - before;
        announce(`${added} more loaded${more.hidden ? '; that is all' : ''}.`);
        if (more.hidden) {
          const first = t.tbody.rows[before];
          const target = first && first.querySelector('a, button');
          (target || t.wrap).focus();
        }
      }),
    );
    return list;
  }

  function section(title, ...children) {
    const id = 's' + ++fieldSeq;
    return h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id }, title), children);
  }

  /** A section-level error (the page's other parts still work). */
  function sectionError(e) {
    if (e instanceof SignedOut) return null;
    const el = h('div', { class: 'error', role: 'alert', 'data-test': 'section-error' });
    report(e, el);
    return el;
  }

  // ---------------------------------------------------------------------------------
  // Sign-in

  function sessionLost(message) {
    state.session = null;
    showSignIn(message, true);
  }

  function showSignIn(message, isError) {
    state.shell = null;
    pageError = null;
    state.renderSeq++;
    const app = document.getElementById('app');
    const alert = h('div', { role: 'alert', class: 'error', 'data-test': 'error', id: 'signin-error', hidden: true });
    const info = h('p', { role: 'status', class: 'status', 'data-test': 'status', hidden: true });
    if (message && isError) {
      alert.textContent = message;
      alert.hidden = false;
    } else if (message) {
      info.textContent = message;
      info.hidden = false;
    }
    const address = field('Mail address', {
      type: 'text',
      name: 'address',
      autocomplete: 'username',
      inputmode: 'email',
      autocapitalize: 'none',
      spellcheck: 'false',
      required: true,
      'data-test': 'signin-address',
    });
    const password = field('Password', {
      type: 'password',
      name: 'password',
      autocomplete: 'current-password',
      required: true,
      'data-test': 'signin-password',
    });
    const submit = h('button', { type: 'submit', class: 'primary', 'data-test': 'signin-submit' }, 'Sign in');
    const f = h('form', { class: 'signin-form', 'aria-labelledby': 'signin-title', 'data-test': 'signin-form' }, address.wrap, password.wrap, h('div', { class: 'actions' }, submit));
    on(f, 'submit', async (ev) => {
      ev.preventDefault();
      alert.hidden = true;
      alert.textContent = '';
      info.hidden = true;
      submit.disabled = true;
      try {
        const s = await api('POST', '/session', {
          body: { address: address.input.value.trim(), password: password.input.value },
          allow401: true,
        });
        password.input.value = '';
        state.session = s;
        startApp();
      } catch (e) {
        alert.textContent = e.message || 'Signing in failed.';
        if (e instanceof ApiError) alert.setAttribute('data-code', e.code);
        alert.hidden = false;
        password.input.value = '';
        password.input.focus();
      } finally {
        submit.disabled = false;
      }
    });
    const title = h('h1', { id: 'signin-title', tabindex: '-1', 'data-test': 'page-title' }, 'Sign in to MaiRust');
    app.replaceChildren(
      h(
        'main',
        { class: 'signin', id: 'main' },
        h('div', { class: 'signin-card' }, title, h('p', { class: 'muted' }, 'Use your mail address and its password.'), info, alert, f),
      ),
    );
    document.title = 'Sign in – MaiRust Admin';
    address.input.focus();
  }

  async function signOut(everywhere) {
    try {
      await api('DELETE', everywhere ? '/sessions' : '/session');
    } catch (e) {
      if (e instanceof SignedOut) return;
      report(e);
      return;
    }
    state.session = null;
    showSignIn(everywhere ? 'You are signed out on every device.' : 'You are signed out.', false);
  }

  // ---------------------------------------------------------------------------------
  // The shell: header, navigation, main

  const NAV = [
    ['dashboard', 'Dashboard', true],
    ['domains', 'Domains', true],
    ['users', 'Users', true],
    ['keys', 'API keys', true],
    ['hooks', 'Hooks', true],
    ['queue', 'Queue', true],
    ['audit', 'Audit log', true],
    ['mail', 'Mail', false],
  ];

  function buildShell() {
    const s = state.session;
    const navLinks = [];
    const list = h('ul', {});
    for (const [name, label, adminOnly] of NAV) {
      if (adminOnly && !s.admin) continue;
      const a = h('a', { href: '#/' + name, 'data-test': 'nav-' + name }, label);
      navLinks.push([name, a]);
      list.append(h('li', {}, a));
    }
    if (s.admin) {
      list.append(h('li', {}, h('a', { href: '/api/v1/docs', 'data-test': 'nav-docs' }, 'API docs')));
    }
    const skip = h('a', { href: '#main', class: 'skip', 'data-test': 'skip-link' }, 'Skip to content');
    on(skip, 'click', (ev) => {
      ev.preventDefault();
      if (state.shell) state.shell.title.focus();
    });
    const title = h('h1', { tabindex: '-1', id: 'page-title', 'data-test': 'page-title' });
    const errorBox = h('div', { role: 'alert', class: 'error', 'data-test': 'error', hidden: true });
    const status = h('div', { role: 'status', 'aria-live': 'polite', class: 'status', 'data-test': 'status', hidden: true });
    const content = h('div', { class: 'content', 'data-test': 'content' });
    const main = h('main', { id: 'main' }, title, status, errorBox, content);
    const header = h(
      'header',
      { class: 'topbar' },
      h('a', { href: s.admin ? '#/dashboard' : '#/mail', class: 'brand' }, 'MaiRust Admin'),
      h(
        'div',
        { class: 'who' },
        h('span', { class: 'user', 'data-test': 'current-user' }, s.user),
        s.admin ? badge('admin', 'admin') : null,
        button('Sign out', () => signOut(false), { 'data-test': 'signout' }),
        button('Sign out everywhere', () => signOut(true), { 'data-test': 'signout-everywhere' }),
      ),
    );
    const nav = h('nav', { class: 'mainnav', 'aria-label': 'Main' }, list);
    document.getElementById('app').replaceChildren(skip, header, h('div', { class: 'layout' }, nav, main));
    state.shell = { title, errorBox, status, content, navLinks };
    pageError = errorBox;
  }

  // ---------------------------------------------------------------------------------
  // Routing

  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    if (!raw.startsWith('/')) return null;
    const qi = raw.indexOf('?');
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const params = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    const parts = path.split('/').filter(Boolean).map(safeDecode);
    return { parts, params };
  }

  function hashWith(base, params) {
    const qs = queryString(params);
    return base + (qs ? '?' + qs : '');
  }

  /** Changes the address bar without a new render (in-page filters). */
  function replaceHash(hash) {
    history.replaceState(null, '', hash);
  }

  const PAGES = {
    dashboard: { title: 'Dashboard', admin: true, render: pageDashboard },
    domains: { title: 'Domains', admin: true, render: (c) => (c.parts[1] ? pageDomain(c) : pageDomains(c)) },
    users: { title: 'Users', admin: true, render: (c) => (c.parts[1] ? pageUser(c) : pageUsers(c)) },
    keys: { title: 'API keys', admin: true, render: pageKeys },
    hooks: { title: 'Hooks', admin: true, render: pageHooks },
    queue: { title: 'Queue', admin: true, render: pageQueue },
    audit: { title: 'Audit log', admin: true, render: pageAudit },
    mail: { title: 'Mail', admin: false, render: (c) => (c.parts[1] ? pageMessage(c) : pageMail(c)) },
  };

  function defaultHash() {
    return state.session && state.session.admin ? '#/dashboard' : '#/mail';
  }

  async function render() {
    if (!state.session || !state.shell) return;
    const route = parseHash();
    if (!route) {
      // A plain fragment (e.g. the skip link): not a page.
      if (location.hash === '' || location.hash === '#') location.replace(defaultHash());
      return;
    }
    const name = route.parts[0];
    const page = PAGES[name];
    if (!page || (page.admin && !state.session.admin)) {
      location.replace(defaultHash());
      return;
    }
    const seq = ++state.renderSeq;
    const { title, content, navLinks } = state.shell;
    for (const [n, a] of navLinks) {
      if (n === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    clearError();
    // A status said just before this navigation (e.g. "Message deleted") stays; an
    // older one belongs to the page left.
    if (Date.now() - announcedAt > 2000) {
      state.shell.status.textContent = '';
      state.shell.status.hidden = true;
    }
    title.replaceChildren(page.title);
    document.title = page.title + ' – MaiRust Admin';
    // Each render fills its own element: a page still loading when another is asked
    // for fills a detached one, never the new page.
    const root = h('div', { class: 'page', 'data-test': 'page-' + name });
    content.replaceChildren(root);
    content.setAttribute('aria-busy', 'true');
    const ctx = {
      parts: route.parts,
      params: route.params,
      main: root,
      alive: () => seq === state.renderSeq && state.shell !== null,
      setTitle(...nodes) {
        if (!this.alive()) return;
        title.replaceChildren(...nodes);
        document.title = title.textContent + ' – MaiRust Admin';
      },
    };
    try {
      await page.render(ctx);
    } catch (e) {
      if (ctx.alive()) report(e);
    }
    if (ctx.alive()) {
      content.removeAttribute('aria-busy');
      title.focus();
    }
  }

  let expiryTimer = null;

  async function startApp() {
    buildShell();
    // At the session's end, show the sign-in form without waiting for a click (asking
    // then does not keep the session alive: it has ended whatever its use).
    clearTimeout(expiryTimer);
    const ends = Date.parse(state.session.expires_at);
    if (!Number.isNaN(ends)) {
      const wait = Math.min(Math.max(ends - Date.now() + 1000, 1000), 2 ** 31 - 1);
      expiryTimer = setTimeout(() => {
        if (state.session) api('GET', '/session').catch(() => {});
      }, wait);
    }
    if (!parseHash()) {
      location.replace(defaultHash()); // renders on hashchange
      return;
    }
    await render();
  }

  // ---------------------------------------------------------------------------------
  // Dashboard

  async function pageDashboard(ctx) {
    const nodes = section('Nodes');
    const stats = section('Mail in the last 24 hours');
    const audit = section('Recent audit events');
    ctx.main.append(nodes, stats, audit);
    await Promise.all([dashNodes(nodes), dashStats(stats), dashAudit(audit)]);
  }

  async function dashNodes(el) {
    let r;
    try {
      r = await api('GET', '/nodes');
    } catch (e) {
      el.append(sectionError(e) || '');
      return;
    }
    const nodes = r.data || [];
    const deps = [...new Set(nodes.flatMap((n) => Object.keys(n.checks || {})))].sort();
    const t = dataTable(
      'Nodes and the health of their dependencies',
      ['Node', 'Version', 'Started', 'Last report', 'Ready'].concat(deps),
      { 'data-test': 'nodes-table' },
    );
    for (const n of nodes) {
      const cells = [
        h(
          'th',
          { scope: 'row' },
          h('span', { class: 'block' }, n.hostname || n.node_id),
          n.hostname && n.node_id !== n.hostname ? h('span', { class: 'block muted small' }, n.node_id) : null,
          n.stale ? badge('stale: not reporting', 'bad') : null,
        ),
        td(n.version || '—'),
        td(fmtDate(n.started_at)),
        td(fmtDate(n.updated_at)),
        td(n.ready ? badge('Ready', 'ok') : badge('Not ready', 'bad')),
      ];
      for (const d of deps) {
        const c = (n.checks || {})[d];
        if (!c) {
          cells.push(td(h('span', { class: 'muted' }, '—')));
          continue;
        }
        cells.push(
          td([
            c.up ? badge('Up', 'ok') : badge('Down', 'bad'),
            c.detail ? h('span', { class: 'block small' }, c.detail) : null,
          ]),
        );
      }
      t.tbody.append(h('tr', { class: n.stale ? 'stale' : null, 'data-test': 'node-row-' + n.node_id }, cells));
    }
    if (!nodes.length) el.append(h('p', { class: 'empty' }, 'No node has reported yet.'));
    else el.append(t.wrap);
  }

  const barClass = (v, max) => 'w' + (max > 0 ? Math.round((20 * v) / max) * 5 : 0);

  async function dashStats(el) {
    let r;
    try {
      r = await api('GET', '/stats', { query: { hours: 24 } });
    } catch (e) {
      el.append(sectionError(e) || '');
      return;
    }
    const hours = r.hours || [];
    const sum = (k) => hours.reduce((a, x) => a + (Number(x[k]) || 0), 0);
    const q = r.queue || {};
    const st = r.storage || {};
    const figure = (label, value, test) =>
      h('div', { class: 'figure', 'data-test': test }, h('dt', {}, label), h('dd', {}, value));
    el.append(
      h(
        'dl',
        { class: 'figures' },
        figure('Received', fmtNumber(sum('received')), 'stat-received'),
        figure('Delivered', fmtNumber(sum('delivered')), 'stat-delivered'),
        figure('Bounced', fmtNumber(sum('bounced')), 'stat-bounced'),
        figure('Queue length', fmtNumber(q.length), 'stat-queue-length'),
        figure('Oldest in queue', q.oldest_age_seconds === null || q.oldest_age_seconds === undefined ? '—' : fmtDuration(q.oldest_age_seconds), 'stat-queue-oldest'),
        figure('Messages stored', fmtNumber(st.messages), 'stat-messages'),
        figure('Storage used', fmtBytes(st.bytes), 'stat-bytes'),
      ),
    );
    if (!hours.length) return;
    const max = Math.max(1, ...hours.flatMap((x) => [x.received || 0, x.delivered || 0, x.bounced || 0]));
    const t = dataTable('Messages per hour', [
      'Hour',
      { label: 'Received', class: 'num' },
      { label: 'Delivered', class: 'num' },
      { label: 'Bounced', class: 'num' },
    ], { class: 'chart', 'data-test': 'stats-table' });
    const cell = (v, kind) =>
      h(
        'td',
        { class: 'barcell' },
        h('span', { class: 'bar-track', 'aria-hidden': 'true' }, h('span', { class: `bar bar-${kind} ${barClass(v || 0, max)}` })),
        h('span', { class: 'num' }, fmtNumber(v || 0)),
      );
    for (const x of hours) {
      const d = new Date(x.start);
      const label = Number.isNaN(d.getTime())
        ? String(x.start)
        : d.toLocaleString(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });
      t.tbody.append(
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, h('time', { datetime: x.start }, label)),
          cell(x.received, 'received'),
          cell(x.delivered, 'delivered'),
          cell(x.bounced, 'bounced'),
        ),
      );
    }
    el.append(t.wrap);
  }

  function auditRow(e) {
    const details = e.details && typeof e.details === 'object' && Object.keys(e.details).length ? JSON.stringify(e.details) : '';
    return h(
      'tr',
      { 'data-test': 'audit-row-' + e.id },
      td(fmtDate(e.timestamp)),
      h('th', { scope: 'row' }, e.event),
      td(e.outcome === 'success' ? badge('success', 'ok') : badge(e.outcome || '?', 'bad')),
      td(e.actor),
      td(e.remote || '—'),
      td(e.target || '—', 'wrap'),
      td(details ? h('code', { class: 'wrap' }, details) : '—'),
    );
  }

  const AUDIT_HEADERS = ['Time', 'Event', 'Outcome', 'Actor', 'Remote', 'Target', 'Details'];

  async function dashAudit(el) {
    const t = dataTable('The last ten audit events', AUDIT_HEADERS, { 'data-test': 'recent-audit' });
    try {
      const r = await api('GET', '/audit', { query: { limit: 10 } });
      for (const e of r.data || []) t.tbody.append(auditRow(e));
      if (!(r.data || []).length) el.append(h('p', { class: 'empty' }, 'No audit events yet.'));
      else el.append(t.wrap);
      el.append(h('p', {}, h('a', { href: '#/audit' }, 'The whole audit log')));
    } catch (e) {
      el.append(sectionError(e) || '');
    }
  }

  // ---------------------------------------------------------------------------------
  // Domains

  async function pageDomains(ctx) {
    const name = field('Domain name', { type: 'text', name: 'name', required: true, placeholder: 'example.org', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'domain-name-input' });
    const list = pagedList({
      caption: 'Domains',
      headers: ['Name', 'Added', 'Actions'],
      path: '/domains',
      test: 'domains',
      empty: 'No domains yet: add the first one above.',
      row: (d) =>
        h(
          'tr',
          { 'data-test': 'domain-row-' + d.name },
          h('th', { scope: 'row' }, h('a', { href: '#/domains/' + enc(d.name), 'data-test': 'domain-open-' + d.name }, d.name)),
          td(fmtDate(d.created_at)),
          td(
            h(
              'div',
              { class: 'row-actions' },
              h('a', { href: '#/domains/' + enc(d.name), class: 'button-link' }, 'DNS & DKIM', h('span', { class: 'visually-hidden' }, ' of ' + d.name)),
              h('a', { href: hashWith('#/users', { domain: d.name }), class: 'button-link' }, 'Users', h('span', { class: 'visually-hidden' }, ' of ' + d.name)),
              button(['Delete', h('span', { class: 'visually-hidden' }, ' ' + d.name)], () => deleteDomain(d.name, () => list.reload()), { class: 'danger', 'data-test': 'domain-delete-' + d.name }),
            ),
          ),
        ),
    });
    const create = form(
      { class: 'inline-form', 'aria-label': 'Add a domain', 'data-test': 'domain-form' },
      [name.wrap, h('button', { type: 'submit', class: 'primary', 'data-test': 'domain-create' }, 'Add domain')],
      async () => {
        const d = await api('POST', '/domains', { body: { name: name.input.value.trim() } });
        name.input.value = '';
        announce(`Domain ${d.name} added.`);
        await list.reload();
      },
    );
    ctx.main.append(section('Add a domain', create), section('All domains', list.el));
    await list.reload();
  }

  async function deleteDomain(name, after) {
    const ok = await confirmAction(`Delete the domain ${name}, with all its users and their mailboxes? This cannot be undone.`, 'Delete domain');
    if (!ok) return;
    await api('DELETE', '/domains/' + enc(name));
    announce(`Domain ${name} deleted.`);
    await after();
  }

  async function pageDomain(ctx) {
    const name = ctx.parts[1];
    const d = await api('GET', '/domains/' + enc(name));
    ctx.setTitle('Domain ', h('span', { 'data-test': 'domain-title' }, d.name));
    const dns = section('DNS records to publish');
    const dkim = section('DKIM keys');
    const danger = section(
      'Remove the domain',
      h('p', {}, 'Removing the domain removes its users and their mailboxes.'),
      button('Delete domain', () => deleteDomain(d.name, async () => { location.hash = '#/domains'; }), { class: 'danger', 'data-test': 'domain-delete' }),
    );
    ctx.main.append(h('p', {}, h('a', { href: '#/domains' }, '← All domains')), dns, dkim, danger);
    const dnsBody = h('div');
    dns.append(dnsBody);
    const loadDns = async () => {
      try {
        const r = await api('GET', `/domains/${enc(d.name)}/dns`);
        const records = r.data || [];
        const t = dataTable('Records', ['Purpose', 'Type', 'Name', 'Value', 'Note'], { 'data-test': 'dns-table' });
        for (const x of records) {
          t.tbody.append(
            h(
              'tr',
              {},
              h('th', { scope: 'row' }, String(x.purpose || '').toUpperCase()),
              td(x.type),
              td(h('code', { class: 'wrap' }, x.name)),
              td(h('code', { class: 'wrap' }, x.value)),
              td(x.note || ''),
            ),
          );
        }
        const zone = h('pre', { class: 'zone', 'data-test': 'dns-zone' }, records.map((x) => x.zone_line).join('\n'));
        dnsBody.replaceChildren(
          records.length ? t.wrap : h('p', { class: 'empty' }, 'No records.'),
          h(
            'details',
            {},
            h('summary', {}, 'As zone file lines'),
            zone,
            button('Copy zone lines', () => copyText(zone.textContent, zone), { 'data-test': 'dns-copy' }),
          ),
        );
      } catch (e) {
        dnsBody.replaceChildren(sectionError(e) || '');
      }
    };
    const keysBody = h('div');
    const algo = () => [['rsa', 'RSA-2048'], ['ed25519', 'Ed25519']];
    const genSelector = field('Selector (optional)', { type: 'text', name: 'selector', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'dkim-selector-input' }, 'Default: the algorithm and today’s date.');
    const genAlgo = field('Algorithm', { tag: 'select', name: 'algorithm', options: algo(), 'data-test': 'dkim-algorithm' });
    const gen = form(
      { class: 'inline-form', 'aria-label': 'Generate a DKIM key' },
      [genSelector.wrap, genAlgo.wrap, h('button', { type: 'submit', class: 'primary', 'data-test': 'dkim-generate' }, 'Generate key')],
      async () => {
        const body = { algorithm: genAlgo.input.value };
        if (genSelector.input.value.trim()) body.selector = genSelector.input.value.trim();
        const k = await api('POST', `/domains/${enc(d.name)}/dkim`, { body });
        genSelector.input.value = '';
        announce(`DKIM key ${k.selector} created: publish its TXT record ${k.dns_name}.`);
        await Promise.all([loadKeys(), loadDns()]);
      },
    );
    const rotAlgo = field('Algorithm', { tag: 'select', name: 'algorithm', options: algo(), 'data-test': 'dkim-rotate-algorithm' });
    const rotSelector = field('New selector (optional)', { type: 'text', name: 'selector', autocapitalize: 'none', spellcheck: 'false' });
    const rotDelay = field('Hours until it signs (optional)', { type: 'number', name: 'delay_hours', min: '0', max: '2160', inputmode: 'numeric' });
    const rotGrace = field('Days the old record stays (optional)', { type: 'number', name: 'grace_days', min: '0', max: '365', inputmode: 'numeric' });
    const rot = form(
      { class: 'inline-form', 'aria-label': 'Rotate a DKIM key' },
      [rotAlgo.wrap, rotSelector.wrap, rotDelay.wrap, rotGrace.wrap, h('button', { type: 'submit', 'data-test': 'dkim-rotate' }, 'Rotate')],
      async () => {
        const body = { algorithm: rotAlgo.input.value };
        if (rotSelector.input.value.trim()) body.selector = rotSelector.input.value.trim();
        if (rotDelay.input.value !== '') body.delay_hours = Number(rotDelay.input.value);
        if (rotGrace.input.value !== '') body.grace_days = Number(rotGrace.input.value);
        const r = await api('POST', `/domains/${enc(d.name)}/dkim/rotate`, { body });
        const retired = (r.retired || []).map((k) => k.selector).join(', ') || 'none';
        announce(`New key ${r.new.selector} signs from ${new Date(r.new.signs_from).toLocaleString()}; retired: ${retired}. Publish its record now.`);
        rotSelector.input.value = '';
        await Promise.all([loadKeys(), loadDns()]);
      },
    );
    dkim.append(
      keysBody,
      h('h3', {}, 'Generate a key'),
      gen,
      h('h3', {}, 'Rotate'),
      h('p', { class: 'muted' }, 'The new key signs after the delay; the old one keeps signing until then and its record stays listed for the grace days.'),
      rot,
    );
    const loadKeys = async () => {
      try {
        const r = await api('GET', `/domains/${enc(d.name)}/dkim`);
        const keys = r.data || [];
        const t = dataTable('DKIM keys', ['Selector', 'Algorithm', 'State', 'Signs from', 'Signs until', 'Publish until', 'Record', 'Actions'], { 'data-test': 'dkim-table' });
        for (const k of keys) {
          const kind = k.state === 'active' ? 'ok' : k.state === 'expired' ? 'bad' : 'warn';
          t.tbody.append(
            h(
              'tr',
              { 'data-test': 'dkim-row-' + k.selector },
              h('th', { scope: 'row' }, k.selector),
              td(k.algorithm),
              td(badge(k.state, kind)),
              td(fmtDate(k.signs_from)),
              td(fmtDate(k.signs_until)),
              td(fmtDate(k.publish_until)),
              td([h('code', { class: 'wrap block' }, k.dns_name), h('code', { class: 'wrap block small' }, k.dns_value)]),
              td(
                button(['Remove', h('span', { class: 'visually-hidden' }, ' key ' + k.selector)], async () => {
                  const ok = await confirmAction(`Remove the DKIM key ${k.selector} of ${d.name} now? Mail it signed may fail verification until it expires.`, 'Remove key');
                  if (!ok) return;
                  await api('DELETE', `/domains/${enc(d.name)}/dkim/${enc(k.selector)}`);
                  announce(`DKIM key ${k.selector} removed.`);
                  await Promise.all([loadKeys(), loadDns()]);
                }, { class: 'danger', 'data-test': 'dkim-remove-' + k.selector }),
              ),
            ),
          );
        }
        keysBody.replaceChildren(keys.length ? t.wrap : h('p', { class: 'empty' }, 'This domain signs no mail yet: generate a key.'));
      } catch (e) {
        keysBody.replaceChildren(sectionError(e) || '');
      }
    };
    await Promise.all([loadDns(), loadKeys()]);
  }

  // ---------------------------------------------------------------------------------
  // Users

  async function pageUsers(ctx) {
    let domain = ctx.params.get('domain') || '';
    const address = field('Address', { type: 'text', name: 'address', required: true, autocomplete: 'off', inputmode: 'email', autocapitalize: 'none', spellcheck: 'false', placeholder: 'someone@example.org', 'data-test': 'user-address-input' });
    const password = field('Password', { type: 'password', name: 'password', required: true, autocomplete: 'new-password', 'data-test': 'user-password-input' });
    const admin = field('Administrator (manages the server)', { type: 'checkbox', name: 'admin', 'data-test': 'user-admin-checkbox' });
    const list = pagedList({
      caption: 'Users',
      headers: ['Address', 'Status', 'Administrator', 'Added', 'Actions'],
      path: '/users',
      query: { domain },
      test: 'users',
      empty: 'No users.',
      row: (u) => userRow(u, list),
    });
    const create = form(
      { class: 'inline-form', 'aria-label': 'Add a user', 'data-test': 'user-form' },
      [address.wrap, password.wrap, admin.wrap, h('button', { type: 'submit', class: 'primary', 'data-test': 'user-create' }, 'Add user')],
      async () => {
        const u = await api('POST', '/users', {
          body: { address: address.input.value.trim(), password: password.input.value, admin: admin.input.checked },
        });
        address.input.value = '';
        password.input.value = '';
        admin.input.checked = false;
        announce(`User ${u.address} added${u.admin ? ' as an administrator' : ''}.`);
        await list.reload();
      },
    );
    const filterInput = field('Domain', { type: 'text', name: 'domain', value: domain, autocapitalize: 'none', spellcheck: 'false', placeholder: 'all domains', 'data-test': 'user-domain-filter' });
    const filter = form(
      { class: 'inline-form', role: 'search', 'aria-label': 'Filter users' },
      [filterInput.wrap, h('button', { type: 'submit', 'data-test': 'user-filter' }, 'Filter')],
      async () => {
        domain = filterInput.input.value.trim();
        replaceHash(hashWith('#/users', { domain }));
        const r = await list.reload({ domain });
        announce(`${(r.data || []).length}${r.pagination && r.pagination.has_more ? '+' : ''} users${domain ? ' in ' + domain : ''}.`);
      },
    );
    ctx.main.append(section('Add a user', create), section('All users', filter, list.el));
    await list.reload();
  }

  function userRow(u, list) {
    return h(
      'tr',
      { 'data-test': 'user-row-' + u.address },
      h('th', { scope: 'row' }, h('a', { href: '#/users/' + enc(u.address), 'data-test': 'user-open-' + u.address }, u.address)),
      td(u.disabled ? badge('Disabled', 'bad') : badge('Active', 'ok')),
      td(yesNo(u.admin)),
      td(fmtDate(u.created_at)),
      td(
        h(
          'div',
          { class: 'row-actions' },
          button([u.disabled ? 'Enable' : 'Disable', h('span', { class: 'visually-hidden' }, ' ' + u.address)], async () => {
            if (await setDisabled(u, !u.disabled)) await list.reload();
          }, { 'data-test': 'user-toggle-' + u.address }),
          h('a', { href: hashWith('#/mail', { user: u.address }), class: 'button-link' }, 'Mail', h('span', { class: 'visually-hidden' }, ' of ' + u.address)),
        ),
      ),
    );
  }

  async function setDisabled(u, disabled) {
    if (disabled) {
      const ok = await confirmAction(`Disable ${u.address}? The user can no longer sign in, their sessions end, and mail to them is refused.`, 'Disable');
      if (!ok) return null;
    }
    const r = await api('PATCH', '/users/' + enc(u.address), { body: { disabled } });
    announce(`${u.address} ${disabled ? 'disabled' : 'enabled'}.`);
    return r;
  }

  async function pageUser(ctx) {
    const addr = ctx.parts[1];
    let u = await api('GET', '/users/' + enc(addr));
    ctx.setTitle('User ', h('span', { 'data-test': 'user-title' }, u.address));
    const info = h('dl', { class: 'meta', 'data-test': 'user-info' });
    const controls = h('div', { class: 'row-actions' });
    const self = () => state.session && state.session.user.toLowerCase() === u.address.toLowerCase();
    const draw = () => {
      const l = u.send_limits;
      info.replaceChildren(
        h('dt', {}, 'Status'),
        h('dd', {}, u.disabled ? badge('Disabled', 'bad') : badge('Active', 'ok')),
        h('dt', {}, 'Administrator'),
        h('dd', { 'data-test': 'user-admin' }, yesNo(u.admin)),
        h('dt', {}, 'Added'),
        h('dd', {}, fmtDate(u.created_at)),
        h('dt', {}, 'Mailboxes'),
        h('dd', {}, (u.mailboxes || []).join(', ') || '—'),
        h('dt', {}, 'Send limits'),
        h(
          'dd',
          { 'data-test': 'user-limits' },
          l
            ? `${l.messages_per_hour || 'no limit of'} messages and ${l.recipients_per_hour || 'no limit of'} recipients per hour (${l.own ? 'this user’s own limits' : 'the server’s defaults'})`
            : '—',
        ),
      );
      controls.replaceChildren(
        button(u.disabled ? 'Enable user' : 'Disable user', async () => {
          const r = await setDisabled(u, !u.disabled);
          if (r) {
            u = r;
            draw();
          }
        }, { 'data-test': 'user-toggle' }),
        button(u.admin ? 'Revoke administrator role' : 'Grant administrator role', async () => {
          const grant = !u.admin;
          const ok = await confirmAction(
            grant
              ? `Make ${u.address} an administrator? They will manage the whole server.`
              : `Take the administrator role from ${u.address}?${self() ? ' This is you: you will lose access to these pages.' : ''}`,
            grant ? 'Grant' : 'Revoke',
          );
          if (!ok) return;
          u = await api('PATCH', '/users/' + enc(u.address), { body: { admin: grant } });
          announce(`${u.address} is ${grant ? 'now' : 'no longer'} an administrator.`);
          if (self() && !grant) {
            await refreshSession();
            startApp();
            return;
          }
          draw();
        }, { 'data-test': 'user-admin-toggle' }),
        h('a', { href: hashWith('#/mail', { user: u.address }), class: 'button-link', 'data-test': 'user-mail' }, 'View mail'),
      );
      limitMessages.input.value = l ? String(l.messages_per_hour) : '';
      limitRecipients.input.value = l ? String(l.recipients_per_hour) : '';
    };
    // For password managers: the account whose password this form sets.
    const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', value: u.address, hidden: true, readonly: true, tabindex: '-1', 'aria-hidden': 'true' });
    const newPassword = field('New password', { type: 'password', name: 'password', required: true, autocomplete: 'new-password', 'data-test': 'user-new-password-input' });
    const pw = form(
      { class: 'inline-form', 'aria-label': 'Set the password' },
      [username, newPassword.wrap, h('button', { type: 'submit', 'data-test': 'user-set-password' }, 'Set password')],
      async () => {
        u = await api('PATCH', '/users/' + enc(u.address), { body: { password: newPassword.input.value } });
        newPassword.input.value = '';
        announce(`Password of ${u.address} changed.`);
        draw();
      },
    );
    const limitMessages = field('Messages per hour', { type: 'number', name: 'send_limits', min: '0', required: true, inputmode: 'numeric', 'data-test': 'user-limit-messages' });
    const limitRecipients = field('Recipients per hour', { type: 'number', name: 'send_limits', min: '0', required: true, inputmode: 'numeric', 'data-test': 'user-limit-recipients' });
    const limits = form(
      { class: 'inline-form', 'aria-label': 'Send limits' },
      [
        limitMessages.wrap,
        limitRecipients.wrap,
        h('button', { type: 'submit', 'data-test': 'user-limits-save' }, 'Save limits'),
      ],
      async () => {
        u = await api('PATCH', '/users/' + enc(u.address), {
          body: {
            send_limits: {
              messages_per_hour: Number(limitMessages.input.value || 0),
              recipients_per_hour: Number(limitRecipients.input.value || 0),
            },
          },
        });
        announce(`Send limits of ${u.address} saved.`);
        draw();
      },
    );
    const resetLimits = button('Use the server’s defaults', async () => {
      u = await api('PATCH', '/users/' + enc(u.address), { body: { send_limits: null } });
      announce(`${u.address} now has the server’s default send limits.`);
      draw();
    }, { 'data-test': 'user-limits-reset' });
    const del = button('Delete user', async () => {
      const ok = await confirmAction(`Delete ${u.address} with their mailboxes and mail? This cannot be undone.`, 'Delete user');
      if (!ok) return;
      await api('DELETE', '/users/' + enc(u.address));
      announce(`User ${u.address} deleted.`);
      location.hash = '#/users';
    }, { class: 'danger', 'data-test': 'user-delete' });
    draw();
    ctx.main.append(
      h('p', {}, h('a', { href: '#/users' }, '← All users')),
      section('Account', info, controls),
      section('Password', pw),
      section('Send limits', h('p', { class: 'muted' }, '0 means no limit.'), limits, h('div', { class: 'row-actions' }, resetLimits)),
      section('Remove the user', del),
    );
  }

  // ---------------------------------------------------------------------------------
  // API keys

  const SCOPES = [
    ['read', 'read: read accounts, mail and the queue'],
    ['write', 'write: change accounts, mail and the queue'],
    ['send', 'send: send mail (POST /send)'],
    ['admin', 'admin: everything, keys and settings included'],
  ];

  async function pageKeys(ctx) {
    const name = field('Name', { type: 'text', name: 'name', required: true, placeholder: 'e.g. billing-app', 'data-test': 'key-name-input' });
    const scopeBoxes = SCOPES.map(([s, label]) => [s, field(label, { type: 'checkbox', name: 'scopes', value: s, 'data-test': 'key-scope-' + s })]);
    const domains = field('Limit to domains (optional)', { type: 'text', name: 'domains', autocapitalize: 'none', spellcheck: 'false', placeholder: 'example.org, example.net', 'data-test': 'key-domains-input' }, 'Separate with spaces or commas; leave empty for a key of every domain.');
    const secretArea = h('div', { 'data-test': 'key-secret-area' });
    const list = pagedList({
      caption: 'API keys',
      headers: ['Name', 'Prefix', 'Scopes', 'Domains', 'Created', 'Last used', 'State', 'Actions'],
      path: '/api-keys',
      test: 'keys',
      empty: 'No API keys.',
      row: (k) =>
        h(
          'tr',
          { 'data-test': 'key-row-' + k.id, class: k.revoked_at ? 'revoked' : null },
          h('th', { scope: 'row' }, k.name),
          td(h('code', {}, k.prefix)),
          td((k.scopes || []).join(', ')),
          td(k.domains ? k.domains.join(', ') : h('span', { class: 'muted' }, 'every domain')),
          td(fmtDate(k.created_at)),
          td(fmtDate(k.last_used_at)),
          td(k.revoked_at ? [badge('Revoked', 'bad'), ' ', fmtDate(k.revoked_at)] : badge('Active', 'ok')),
          td(
            k.revoked_at
              ? ''
              : button(['Revoke', h('span', { class: 'visually-hidden' }, ' key ' + k.name)], async () => {
                const ok = await confirmAction(`Revoke the API key “${k.name}” (${k.prefix}…)? It stops working at once.`, 'Revoke key');
                if (!ok) return;
                await api('DELETE', '/api-keys/' + enc(k.id));
                announce(`Key ${k.name} revoked.`);
                await list.reload();
              }, { class: 'danger', 'data-test': 'key-revoke-' + k.id }),
          ),
        ),
    });
    const create = form(
      { class: 'stack-form', 'aria-label': 'Create an API key', 'data-test': 'key-form' },
      [
        name.wrap,
        h('fieldset', {}, h('legend', {}, 'Scopes'), scopeBoxes.map(([, f]) => f.wrap)),
        domains.wrap,
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', 'data-test': 'key-create' }, 'Create key')),
      ],
      async () => {
        const scopes = scopeBoxes.filter(([, f]) => f.input.checked).map(([s]) => s);
        const body = { name: name.input.value.trim(), scopes };
        const ds = words(domains.input.value);
        if (ds.length) body.domains = ds;
        const k = await api('POST', '/api-keys', { body });
        showSecret(secretArea, k);
        name.input.value = '';
        domains.input.value = '';
        for (const [, f] of scopeBoxes) f.input.checked = false;
        announce(`Key ${k.name} created. Copy it now: it is not shown again.`);
        await list.reload();
      },
    );
    ctx.main.append(section('Create an API key', secretArea, create), section('All keys', list.el));
    await list.reload();
  }

  function showSecret(area, k) {
    const code = h('code', { class: 'secret', 'data-test': 'key-secret' }, k.key);
    const box = h(
      'div',
      { class: 'secret-box', role: 'group', 'aria-labelledby': 'secret-title', 'data-test': 'key-secret-box' },
      h('h3', { id: 'secret-title' }, `The new key “${k.name}”: shown only this once`),
      h('p', {}, 'Copy it now and keep it somewhere safe. The server keeps only its hash: it cannot show it again.'),
      h('div', { class: 'secret-line' }, code),
      h(
        'div',
        { class: 'row-actions' },
        button('Copy key', () => copyText(k.key, code), { class: 'primary', 'data-test': 'key-copy' }),
        button('I have copied it: hide', async () => {
          area.replaceChildren();
          if (state.shell) state.shell.title.focus();
        }, { 'data-test': 'key-secret-hide' }),
      ),
    );
    area.replaceChildren(box);
    box.querySelector('button').focus();
  }

  // ---------------------------------------------------------------------------------
  // Hooks

  function breakerText(b) {
    if (!b) return badge('unknown');
    switch (b.state) {
      case 'closed':
        return badge(`closed${b.failures ? `, ${b.failures} failure${b.failures === 1 ? '' : 's'}` : ''}`, b.failures ? 'warn' : 'ok');
      case 'open':
        return badge(`open, retry in ${fmtDuration((b.retry_in_ms || 0) / 1000)}`, 'bad');
      case 'half_open':
        return badge('half-open (trial call)', 'warn');
      default:
        return badge(String(b.state));
    }
  }

  async function pageHooks(ctx) {
    const body = h('div');
    ctx.main.append(
      section(
        'Hooks and their circuit breakers',
        h('p', { class: 'muted' }, 'Hooks from config.yaml are changed there; a hook’s breaker opens after repeated failures and closes after its cool-down or a reset.'),
        body,
      ),
    );
    const load = async () => {
      const r = await api('GET', '/hooks');
      const hooks = r.data || [];
      const t = dataTable('Hooks', ['Id', 'Event', 'URL', 'Source', 'Enabled', 'Breaker', 'Actions', 'Last test'], { 'data-test': 'hooks-table' });
      for (const x of hooks) {
        const result = h('span', { 'data-test': 'hook-result-' + x.id });
        t.tbody.append(
          h(
            'tr',
            { 'data-test': 'hook-row-' + x.id },
            h('th', { scope: 'row' }, x.id),
            td(String(x.event).replace(/_/g, '-')),
            td(h('code', { class: 'wrap' }, x.url)),
            td(x.source),
            td(yesNo(x.enabled)),
            td(h('span', { 'data-test': 'hook-breaker-' + x.id }, breakerText(x.breaker))),
            td(
              h(
                'div',
                { class: 'row-actions' },
                button(['Reset breaker', h('span', { class: 'visually-hidden' }, ' of ' + x.id)], async () => {
                  await api('POST', `/hooks/${enc(x.id)}/reset`);
                  announce(`Breaker of hook ${x.id} closed.`);
                  await load();
                }, { 'data-test': 'hook-reset-' + x.id }),
                button(['Test', h('span', { class: 'visually-hidden' }, ' ' + x.id)], async () => {
                  result.textContent = 'Calling…';
                  try {
                    const c = await api('POST', `/hooks/${enc(x.id)}/test`);
                    const text = c.ok
                      ? `OK: HTTP ${c.status} in ${c.latency_ms} ms`
                      : c.status
                        ? `Failed: HTTP ${c.status} in ${c.latency_ms} ms`
                        : `Failed: ${String(c.error || 'no answer').replace(/_/g, ' ')} after ${c.latency_ms} ms`;
                    result.replaceChildren(badge(text, c.ok ? 'ok' : 'bad'));
                    announce(`Hook ${x.id}: ${text}.`);
                  } catch (e) {
                    result.textContent = '';
                    throw e;
                  }
                }, { 'data-test': 'hook-test-' + x.id, disabled: !x.enabled }),
              ),
            ),
            td(result),
          ),
        );
      }
      body.replaceChildren(hooks.length ? t.wrap : h('p', { class: 'empty' }, 'No hooks are configured.'));
    };
    await load();
  }

  // ---------------------------------------------------------------------------------
  // Queue

  async function pageQueue(ctx) {
    let limit = ctx.params.get('limit') || '50';
    const statsBody = h('div');
    const listBody = h('div');
    const limitField = field('Entries to show', {
      tag: 'select',
      name: 'limit',
      value: limit,
      options: [['50', '50'], ['100', '100'], ['200', '200'], ['500', '500']],
      'data-test': 'queue-limit',
    });
    const textFilter = field('Filter the shown entries', { type: 'search', name: 'filter', placeholder: 'sender, recipient, id or reply', 'data-test': 'queue-filter' });
    let entries = [];
    let hasMore = false;
    const loadStats = async () => {
      try {
        const s = await api('GET', '/queue/stats');
        const last = s.last_hour || {};
        const fig = (label, value, test) => h('div', { class: 'figure', 'data-test': test }, h('dt', {}, label), h('dd', {}, value));
        statsBody.replaceChildren(
          h(
            'dl',
            { class: 'figures' },
            fig('Queued', fmtNumber(s.entries), 'queue-entries'),
            fig('Recipients pending', fmtNumber(s.pending_recipients), 'queue-pending'),
            fig('Due now', fmtNumber(s.due), 'queue-due'),
            fig('Being delivered', fmtNumber(s.in_flight), 'queue-in-flight'),
            fig('Waiting to retry', fmtNumber(s.deferred), 'queue-deferred'),
            fig('Oldest', s.oldest_age_seconds === null || s.oldest_age_seconds === undefined ? '—' : fmtDuration(s.oldest_age_seconds), 'queue-oldest'),
          ),
          h(
            'p',
            { class: 'muted' },
            `Last hour: ${fmtNumber(last.delivered)} delivered, ${fmtNumber(last.deferred)} deferred, ${fmtNumber(last.bounced)} bounced, ${fmtNumber(last.expired)} expired.`,
          ),
        );
      } catch (e) {
        statsBody.replaceChildren(sectionError(e) || '');
      }
    };
    const draw = () => {
      const needle = textFilter.input.value.trim().toLowerCase();
      const shown = entries.filter((q) => {
        if (!needle) return true;
        const hay = [q.id, q.envelope_from]
          .concat((q.recipients || []).flatMap((r) => [r.address, r.status, r.last_reply || '']))
          .join('\n')
          .toLowerCase();
        return hay.includes(needle);
      });
      const t = dataTable('Queued messages, next attempt first', ['Id', 'Sender', 'Recipients', 'Attempts', 'Next attempt', 'Queued', 'Expires', 'Size', 'Actions'], { 'data-test': 'queue-table' });
      for (const q of shown) {
        t.tbody.append(
          h(
            'tr',
            { 'data-test': 'queue-row-' + q.id },
            h('th', { scope: 'row' }, h('code', { class: 'wrap' }, q.id)),
            td(q.envelope_from || h('span', { class: 'muted' }, '<> (bounce)'), 'wrap'),
            td(
              h(
                'ul',
                { class: 'plain' },
                (q.recipients || []).map((r) =>
                  h(
                    'li',
                    {},
                    h('span', { class: 'wrap' }, r.address),
                    ' ',
                    badge(r.status, r.status === 'delivered' ? 'ok' : r.status === 'bounced' || r.status === 'failed' ? 'bad' : 'warn'),
                    r.attempts ? h('span', { class: 'muted small' }, ` ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`) : null,
                    r.last_reply ? h('span', { class: 'block small wrap' }, r.last_reply) : null,
                  ),
                ),
              ),
            ),
            td(String(q.attempts), 'num'),
            td([fmtDate(q.next_attempt_at), q.lease_owner ? h('span', { class: 'block small' }, 'being delivered by ' + q.lease_owner) : null]),
            td(fmtDate(q.created_at)),
            td(fmtDate(q.expires_at)),
            td(fmtBytes(q.size), 'num'),
            td(
              h(
                'div',
                { class: 'row-actions' },
                button(['Retry now', h('span', { class: 'visually-hidden' }, ' ' + q.id)], async () => {
                  await api('POST', `/queue/${enc(q.id)}/retry`);
                  announce(`Queued message ${q.id} is due now.`);
                  await Promise.all([loadList(), loadStats()]);
                }, { 'data-test': 'queue-retry-' + q.id }),
                button(['Delete', h('span', { class: 'visually-hidden' }, ' ' + q.id)], async () => {
                  const ok = await confirmAction(`Delete the queued message ${q.id}? It is neither delivered nor bounced.`, 'Delete');
                  if (!ok) return;
                  await api('DELETE', `/queue/${enc(q.id)}`);
                  announce(`Queued message ${q.id} deleted.`);
                  await Promise.all([loadList(), loadStats()]);
                }, { class: 'danger', 'data-test': 'queue-delete-' + q.id }),
              ),
            ),
          ),
        );
      }
      listBody.replaceChildren(
        shown.length ? t.wrap : h('p', { class: 'empty', 'data-test': 'queue-empty' }, entries.length ? 'No shown entry matches the filter.' : 'The queue is empty.'),
        hasMore ? h('p', { class: 'muted' }, `More messages are queued than the ${limit} shown: show more entries to see them.`) : null,
      );
    };
    const loadList = async () => {
      const r = await api('GET', '/queue', { query: { limit } });
      entries = r.data || [];
      hasMore = !!(r.pagination && r.pagination.has_more);
      draw();
    };
    const controls = form(
      { class: 'inline-form', role: 'search', 'aria-label': 'Queue list options' },
      [limitField.wrap, textFilter.wrap, h('button', { type: 'submit', 'data-test': 'queue-refresh' }, 'Refresh')],
      async () => {
        limit = limitField.input.value;
        replaceHash(hashWith('#/queue', { limit: limit === '50' ? '' : limit }));
        await Promise.all([loadList(), loadStats()]);
        announce(`${entries.length} queued messages listed.`);
      },
    );
    on(textFilter.input, 'input', draw);
    ctx.main.append(section('Queue figures', statsBody), section('Queued messages', controls, listBody));
    await Promise.all([loadList(), loadStats()]);
  }

  // ---------------------------------------------------------------------------------
  // Audit log

  async function pageAudit(ctx) {
    const p = ctx.params;
    const event = field('Event', { type: 'text', name: 'event', value: p.get('event') || '', placeholder: 'e.g. auth.login', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'audit-event' });
    const outcome = field('Outcome', { tag: 'select', name: 'outcome', value: p.get('outcome') || '', options: [['', 'any'], ['success', 'success'], ['failure', 'failure']], 'data-test': 'audit-outcome' });
    const actor = field('Actor', { type: 'text', name: 'actor', value: p.get('actor') || '', placeholder: 'exactly as listed', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'audit-actor' });
    const target = field('Target', { type: 'text', name: 'target', value: p.get('target') || '', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'audit-target' });
    const after = field('From', { type: 'datetime-local', name: 'after', value: toLocalInput(p.get('after')), 'data-test': 'audit-after' });
    const before = field('Until', { type: 'datetime-local', name: 'before', value: toLocalInput(p.get('before')), 'data-test': 'audit-before' });
    const read = () => ({
      event: event.input.value.trim(),
      outcome: outcome.input.value,
      actor: actor.input.value.trim(),
      target: target.input.value.trim(),
      after: fromLocalInput(after.input.value),
      before: fromLocalInput(before.input.value),
    });
    const list = pagedList({
      caption: 'Audit events, newest first',
      headers: AUDIT_HEADERS,
      path: '/audit',
      query: read(),
      test: 'audit',
      moreTest: 'audit-more',
      empty: 'No audit event matches.',
      row: auditRow,
    });
    const filters = form(
      { class: 'inline-form', role: 'search', 'aria-label': 'Filter the audit log', 'data-test': 'audit-form' },
      [event.wrap, outcome.wrap, actor.wrap, target.wrap, after.wrap, before.wrap, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', 'data-test': 'audit-apply' }, 'Apply filters'))],
      async () => {
        const q = read();
        replaceHash(hashWith('#/audit', q));
        const r = await list.reload(q);
        announce(`${(r.data || []).length}${r.pagination && r.pagination.has_more ? '+' : ''} audit events.`);
      },
    );
    const clear = button('Clear filters', async () => {
      for (const f of [event, actor, target, after, before]) f.input.value = '';
      outcome.input.value = '';
      replaceHash('#/audit');
      await list.reload(read());
      announce('Filters cleared.');
    }, { 'data-test': 'audit-clear' });
    ctx.main.append(section('Filters', filters, h('div', { class: 'row-actions' }, clear)), section('Events', list.el));
    await list.reload();
  }

  // ---------------------------------------------------------------------------------
  // Mail

  const SEEN = '\\Seen';
  const FLAGGED = '\\Flagged';

  async function pageMail(ctx) {
    const s = state.session;
    const p = ctx.params;
    const user = s.admin ? (p.get('user') || '').trim() : s.user;
    const mailbox = p.get('mailbox') || '';
    let q = p.get('q') || '';
    const base = () => ({ user: s.admin ? user : '', mailbox, q });
    state.lastMailHash = hashWith('#/mail', base());

    const side = h('nav', { class: 'mailboxes', 'aria-label': 'Mailboxes', 'data-test': 'mailboxes' });
    const listArea = h('div', { class: 'mail-main' });
    ctx.main.append(h('div', { class: 'mail-layout' }, side, listArea));

    if (s.admin) {
      const who = field('Mail of user', { type: 'text', name: 'user', value: user, inputmode: 'email', autocapitalize: 'none', spellcheck: 'false', placeholder: 'every user', 'data-test': 'mail-user-input' });
      side.append(
        form(
          { class: 'stack-form small-form', 'aria-label': 'Choose whose mail to show' },
          [who.wrap, h('button', { type: 'submit', 'data-test': 'mail-user-show' }, 'Show')],
          async () => {
            location.hash = hashWith('#/mail', { user: who.input.value.trim() });
          },
        ),
      );
    }
    const boxes = h('ul', { class: 'plain boxlist' });
    side.append(h('h2', { class: 'small-heading' }, user ? user : 'Every user'), boxes);
    const boxLink = (label, id) => {
      const a = h('a', { href: hashWith('#/mail', { user: s.admin ? user : '', mailbox: id }), 'data-test': 'mailbox-' + (id === '' ? 'all' : label) }, label);
      if (String(id) === String(mailbox)) a.setAttribute('aria-current', 'page');
      return h('li', {}, a);
    };
    boxes.append(boxLink(user ? 'All mail' : 'All mail (every user)', ''));
    let boxName = '';
    if (user) {
      try {
        const r = await api('GET', `/users/${enc(user)}/mailboxes`);
        for (const mb of r.data || []) {
          boxes.append(boxLink(mb.name, mb.id));
          if (String(mb.id) === String(mailbox)) boxName = mb.name;
        }
      } catch (e) {
        side.append(sectionError(e) || '');
      }
    }
    if (boxName) ctx.setTitle('Mail: ', h('span', {}, boxName));

    const search = field('Search mail', { type: 'search', name: 'q', value: q, placeholder: 'subject, from or to', 'data-test': 'mail-search-input' });
    const headers = ['Status', 'From', 'Subject', 'Received', { label: 'Size', class: 'num' }];
    if (s.admin) headers.splice(3, 0, 'User');
    const list = pagedList({
      caption: 'Messages, newest first',
      headers,
      path: '/messages',
      query: { user: s.admin ? user : '', mailbox, q },
      test: 'messages',
      moreTest: 'messages-more',
      empty: 'No messages.',
      row: (m) => messageRow(m, s.admin),
    });
    const searchForm = form(
      { class: 'inline-form', role: 'search', 'aria-label': 'Search mail', 'data-test': 'mail-search-form' },
      [search.wrap, h('button', { type: 'submit', 'data-test': 'mail-search' }, 'Search')],
      async () => {
        q = search.input.value.trim();
        state.lastMailHash = hashWith('#/mail', base());
        replaceHash(state.lastMailHash);
        const r = await list.reload(base());
        announce(`${(r.data || []).length}${r.pagination && r.pagination.has_more ? '+' : ''} messages${q ? ' found' : ''}.`);
      },
    );
    listArea.append(searchForm, list.el);
    await list.reload();
  }

  function messageRow(m, admin) {
    const seen = (m.flags || []).includes(SEEN);
    const flagged = (m.flags || []).includes(FLAGGED);
    const href = '#/mail/' + enc(m.id);
    const link = h('a', { href, 'data-test': 'message-link-' + m.id }, m.subject || '(no subject)');
    const cells = [
      td([
        seen ? null : badge('new', 'new'),
        flagged ? badge('flagged', 'warn') : null,
        m.attachments ? h('span', { class: 'muted small block' }, `${m.attachments} att.`) : null,
      ]),
      td(m.from || m.envelope_from || '—', 'wrap'),
      h('th', { scope: 'row', class: 'subject' }, link, (m.tags || []).length ? h('span', { class: 'block small muted' }, m.tags.join(' ')) : null),
      td(fmtDate(m.received_at)),
      td(fmtBytes(m.size), 'num'),
    ];
    if (admin) cells.splice(3, 0, td(m.user, 'wrap'));
    const tr = h('tr', { 'data-test': 'message-row-' + m.id, class: 'clickable' + (seen ? '' : ' unread') }, cells);
    on(tr, 'click', (ev) => {
      if (ev.target.closest('a, button, input, select, textarea')) return;
      if (window.getSelection && String(window.getSelection())) return;
      location.hash = href;
    });
    return tr;
  }

  async function pageMessage(ctx) {
    const id = ctx.parts[1];
    if (!/^\d+$/.test(id)) throw new ApiError(404, 'NOT_FOUND', `There is no message ${id}.`);
    let m = await api('GET', '/messages/' + id);
    const setSubject = () => ctx.setTitle(h('span', { 'data-test': 'message-subject' }, m.subject || '(no subject)'));
    setSubject();

    const meta = h('dl', { class: 'meta', 'data-test': 'message-meta' });
    const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Message actions' });
    const tags = field('Tags', { type: 'text', name: 'tags', autocapitalize: 'none', spellcheck: 'false', 'data-test': 'message-tags-input' }, 'Separated by spaces: letters, digits and - _ . : /');
    const drawMeta = () => {
      const row = (label, value, test) => [h('dt', {}, label), h('dd', test ? { 'data-test': test } : {}, value)];
      const auth = m.authentication && typeof m.authentication === 'object' ? m.authentication : null;
      const authText = auth
        ? ['spf', 'dkim', 'dmarc', 'arc']
          .filter((k) => auth[k] !== undefined && auth[k] !== null)
          .map((k) => `${k}: ${typeof auth[k] === 'object' ? JSON.stringify(auth[k]) : auth[k]}`)
          .join('; ')
        : '';
      const spam = m.spam && typeof m.spam === 'object' ? m.spam : null;
      meta.replaceChildren(
        ...row('From', m.from || '—', 'message-from'),
        ...row('To', m.to || '—', 'message-to'),
        ...row('Date', fmtDate(m.date)),
        ...row('Received', fmtDate(m.received_at)),
        ...row('Mailbox', `${m.mailbox} of ${m.user}`),
        ...row('Size', fmtBytes(m.size)),
        ...row('Envelope sender', m.envelope_from || '<> (null sender)'),
        ...(m.submitted_by ? row('Submitted by', m.submitted_by) : []),
        ...(m.header_message_id ? row('Message-ID', m.header_message_id) : []),
        ...row('Flags', (m.flags || []).join(' ') || '—', 'message-flags'),
        ...row('Tags', (m.tags || []).join(' ') || '—', 'message-tags'),
        ...(authText ? row('Authentication', authText) : []),
        ...(spam ? row('Spam check', `score ${spam.score} of ${spam.required_score}, ${spam.action}`) : []),
      );
      const seen = (m.flags || []).includes(SEEN);
      const flagged = (m.flags || []).includes(FLAGGED);
      toolbar.replaceChildren(
        h('a', { href: state.lastMailHash, class: 'button-link', 'data-test': 'message-back' }, '← Back to the list'),
        h('a', { href: `${API}/messages/${id}/raw`, download: `message-${id}.eml`, class: 'button-link', 'data-test': 'message-raw' }, 'Download raw (.eml)'),
        button(seen ? 'Mark unread' : 'Mark read', () => setFlag(SEEN, !seen), { 'data-test': 'message-toggle-read', 'aria-pressed': null }),
        button(flagged ? 'Remove flag' : 'Flag', () => setFlag(FLAGGED, !flagged), { 'data-test': 'message-toggle-flag' }),
        button('Delete', async () => {
          const ok = await confirmAction(`Delete the message “${m.subject || '(no subject)'}”?`, 'Delete message');
          if (!ok) return;
          await api('DELETE', '/messages/' + id);
          announce('Message deleted.');
          location.hash = state.lastMailHash;
        }, { class: 'danger', 'data-test': 'message-delete' }),
      );
      tags.input.value = (m.tags || []).join(' ');
    };
    const setFlag = async (flag, present) => {
      const flags = (m.flags || []).filter((f) => f !== flag);
      if (present) flags.push(flag);
      m = await api('PATCH', '/messages/' + id, { body: { flags } });
      drawMeta();
      announce(flag === SEEN ? (present ? 'Marked read.' : 'Marked unread.') : present ? 'Flagged.' : 'Flag removed.');
    };
    const tagForm = form(
      { class: 'inline-form', 'aria-label': 'Tags' },
      [tags.wrap, h('button', { type: 'submit', 'data-test': 'message-tags-save' }, 'Save tags')],
      async () => {
        m = await api('PATCH', '/messages/' + id, { body: { tags: words(tags.input.value) } });
        drawMeta();
        announce('Tags saved.');
      },
    );
    drawMeta();
    const body = h('div', { 'data-test': 'message-body' }, h('p', { class: 'muted' }, 'Loading the message…'));
    ctx.main.append(toolbar, section('Details', meta, tagForm), body);
    try {
      const c = await api('GET', `/messages/${id}/content`);
      if (!ctx.alive()) return;
      body.replaceChildren(...messageContent(id, c));
    } catch (e) {
      body.replaceChildren(sectionError(e) || '');
    }
  }

  function messageContent(id, c) {
    const parts = [];
    const headers = c.headers || [];
    const t = dataTable('Headers', ['Name', 'Value'], { 'data-test': 'message-headers' });
    for (const x of headers) {
      t.tbody.append(h('tr', {}, h('th', { scope: 'row' }, x.name), td(x.value, 'wrap pre')));
    }
    parts.push(h('details', { class: 'headers panel' }, h('summary', { 'data-test': 'message-headers-toggle' }, `Headers (${headers.length})`), t.wrap));
    const atts = c.attachments || [];
    if (atts.length) {
      parts.push(
        section(
          `Attachments (${atts.length})`,
          h(
            'ul',
            { class: 'attachments', 'data-test': 'message-attachments' },
            atts.map((a) => h('li', {}, h('span', { class: 'wrap' }, a.filename || '(no name)'), h('span', { class: 'muted' }, ` — ${a.content_type || 'unknown type'}, ${fmtBytes(a.size)}`))),
          ),
        ),
      );
    }
    if (c.has_html) {
      const frame = h('iframe', {
        sandbox: '',
        referrerpolicy: 'no-referrer',
        src: `${API}/messages/${enc(id)}/html`,
        title: 'Message (HTML)',
        class: 'html-frame',
        'data-test': 'message-html-frame',
      });
      parts.push(
        section(
          'HTML view',
          h(
            'p',
            { class: 'note', 'data-test': 'remote-content-note' },
            'Remote content is blocked: images and other resources from other sites are not loaded, and scripts do not run. The HTML is shown sanitized, in an isolated frame.',
          ),
          frame,
        ),
      );
    }
    if (c.text !== null && c.text !== undefined) {
      parts.push(section('Text', h('pre', { class: 'message-text', 'data-test': 'message-text' }, c.text)));
    } else if (!c.has_html) {
      parts.push(h('p', { class: 'empty' }, 'This message has no text to show; download it raw to read it.'));
    }
    return parts;
  }

  // ---------------------------------------------------------------------------------
  // Start

  async function boot() {
    on(window, 'hashchange', () => {
      render();
    });
    try {
      const s = await api('GET', '/session', { allow401: true });
      state.session = s;
      await startApp();
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
        showSignIn(null, false);
      } else {
        showSignIn(e && e.message ? `The server could not be asked about your session: ${e.message}` : null, true);
      }
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', boot);
  } else {
    boot();
  }
})();
