// The service worker: keeps the app shell (every file of the app but this
// one) in a cache named after the files' hashes, so the app opens with no
// network at all. A server with different files serves a different sw.js
// (the list below changes), the browser installs it, it caches the new
// shell and drops the old one. Records live in IndexedDB, which this never
// touches: an update loses no data. API calls (/v1/…) are not intercepted.
//
// The list is kept in step with the files by tests/tests/field_app.rs;
// `PUFA_UPDATE_SHELL=1 cargo test -p pufa-tests --test field_app` rewrites it.

// shell:begin
const VERSION = '99328085d73ce008';
const SHELL = [
  './app.css',
  './icons/apple-touch-icon.png',
  './icons/icon-192.png',
  './icons/icon-512.png',
  './icons/maskable-512.png',
  './',
  './js/dates.js',
  './js/db.js',
  './js/dom.js',
  './js/forms.js',
  './js/hash.js',
  './js/hlc.js',
  './js/i18n.js',
  './js/main.js',
  './js/records.js',
  './js/sync.js',
  './manifest.webmanifest',
];
// shell:end

const CACHE = `pufa-shell-${VERSION}`;
const PREFIX = 'pufa-shell-';

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith(PREFIX) && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  // Opening the app (any page under the scope) gets the cached index.html.
  const key = req.mode === 'navigate' ? scope.href : req;
  event.respondWith(
    caches
      .open(CACHE)
      .then((cache) => cache.match(key, { ignoreSearch: true }))
      .then((hit) => hit || fetch(req)),
  );
});
