/* The registry client: the distribution HTTP API v2 over libcurl.
 *
 * GET /v2/<repo>/manifests/<tag|digest> (an index picks the platform's manifest), then the
 * config and every layer from /v2/<repo>/blobs/<digest>. A 401 carries a WWW-Authenticate
 * challenge: Bearer (a token from the realm, with the configured credentials if any) or
 * Basic (the configured credentials). Every blob is hashed before it is stored; a download
 * cut short resumes with a Range request; a layer already in the store is not asked for. Its
 * settings (registries.json): registry_settings.c. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "home.h"
#include "image.h"
#include "json.h"
#include "util.h"

#define ACCEPT_MANIFESTS                                                                                            \
	"Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, " \
	"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
#define MAX_LAYER_BYTES (64ull << 30)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- HTTP ---- */

struct reg {
	CURL *curl;
	const struct image_ref *ref;
	const struct registry_options *o;
	struct registry_settings settings;
	char base[512]; /* "https://host:port", or a mirror's */
	char *token;    /* bearer token, once we have one */
	bool basic;     /* send the configured credentials as Basic */
	capsule_error *err;
	int images_fd;
	const char *progress_digest;
	uint64_t progress_base;
	uint64_t deadline_ms; /* the pull's end, on now_ms()'s clock */
	char what[640];       /* what the transfer under way fetches, for its errors */
};

struct http_resp {
	long status;
	char content_type[128];
	char www_auth[1024];
	char docker_digest[IMAGE_DIGEST_LEN + 1];
};

struct mem_sink {
	char *buf;
	size_t len, max;
	bool too_big;
};

struct file_sink {
	int fd;
	uint64_t written, max;
	bool too_big;
	bool write_failed;
};

static size_t mem_write(char *data, size_t size, size_t nmemb, void *payload)
{
	struct mem_sink *m = payload;
	size_t n = size * nmemb;
	if (m->len + n > m->max) {
		m->too_big = true;
		return 0;
	}
	char *nb = realloc(m->buf, m->len + n + 1);
	if (!nb)
		return 0;
	m->buf = nb;
	memcpy(m->buf + m->len, data, n);
	m->len += n;
	m->buf[m->len] = '\0';
	return n;
}

static size_t file_write(char *data, size_t size, size_t nmemb, void *payload)
{
	struct file_sink *f = payload;
	size_t n = size * nmemb;
	if (f->written + n > f->max) {
		f->too_big = true;
		return 0;
	}
	if (write_all(f->fd, data, n) < 0) {
		f->write_failed = true;
		return 0;
	}
	f->written += n;
	return n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t size)
{
	size_t nl = strlen(name);
	if (n <= nl || strncasecmp(line, name, nl) || line[nl] != ':')
		return;
	const char *v = line + nl + 1;
	size_t vl = n - nl - 1;
	while (vl && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	if (vl >= size)
		vl = size - 1;
	memcpy(out, v, vl);
	out[vl] = '\0';
}

static size_t header_cb(char *line, size_t size, size_t nmemb, void *payload)
{
	struct http_resp *h = payload;
	size_t n = size * nmemb;
	/* A redirect's headers come first: keep those of the last response only. */
	if (n > 5 && !strncmp(line, "HTTP/", 5)) {
		h->content_type[0] = h->www_auth[0] = h->docker_digest[0] = '\0';
		return n;
	}
	header_value(line, n, "Content-Type", h->content_type, sizeof(h->content_type));
	header_value(line, n, "WWW-Authenticate", h->www_auth, sizeof(h->www_auth));
	header_value(line, n, "Docker-Content-Digest", h->docker_digest, sizeof(h->docker_digest));
	return n;
}

static int xfer_cb(void *payload, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct reg *r = payload;
	if (r->o->progress && r->progress_digest && dltotal > 0)
		r->o->progress("download", r->progress_digest, r->progress_base + (uint64_t)dlnow,
			       r->progress_base + (uint64_t)dltotal, r->o->payload);
	return 0;
}

/* Limits are whatever the configuration says; past about a year they mean "never", and stay
 * in range of curl's longs and our millisecond clock. */
static uint64_t seconds_to_ms(uint64_t seconds)
{
	const uint64_t year = 366ull * 24 * 3600;
	return (seconds < year ? seconds : year) * 1000;
}

static int pull_deadline_passed(struct reg *r)
{
	return cap_err_plain(r->err, ETIMEDOUT, "%s: the pull passed its deadline of %llu s (\"pull_seconds\" in the "
			     "registry configuration's \"limits\")", r->what,
			     (unsigned long long)r->settings.limits.pull_seconds);
}

/* Why a transfer that curl gave up as timed out ended. TIMEOUT_MS was its limit, FROM_PULL
 * whether that limit was what was left of the pull rather than transfer_seconds. */
static int timed_out(struct reg *r, uint64_t timeout_ms, bool from_pull)
{
	const struct image_limits *l = &r->settings.limits;
	curl_off_t elapsed_us = 0, connect_us = 0;
	curl_easy_getinfo(r->curl, CURLINFO_TOTAL_TIME_T, &elapsed_us);
	curl_easy_getinfo(r->curl, CURLINFO_CONNECT_TIME_T, &connect_us);
	if ((uint64_t)elapsed_us / 1000 + 1 < timeout_ms && !connect_us)
		return 0; /* the connection itself timed out: the registry is not there */
	if ((uint64_t)elapsed_us / 1000 + 1 < timeout_ms)
		return cap_err_plain(r->err, ETIMEDOUT, "%s: the transfer stalled (under %u bytes/s for %llu s; "
				     "\"stall_seconds\" in the registry configuration's \"limits\")", r->what,
				     IMAGE_STALL_BYTES_PER_SECOND, (unsigned long long)l->stall_seconds);
	if (from_pull)
		return pull_deadline_passed(r);
	return cap_err_plain(r->err, ETIMEDOUT, "%s: no complete answer within %llu s (\"transfer_seconds\" in the "
			     "registry configuration's \"limits\")", r->what, (unsigned long long)l->transfer_seconds);
}

/* One GET of URL into the sink (WRITE, SINK), with our credentials. RANGE_FROM > 0 asks for
 * the rest of a blob. Returns 0 with resp->status set, or -errno for a transport failure. */
static int http_get(struct reg *r, const char *url, const char *accept, curl_write_callback write, void *sink,
		    uint64_t range_from, struct http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	uint64_t now = now_ms();
	if (now >= r->deadline_ms)
		return pull_deadline_passed(r);
	/* Both bound time, not bytes: a server that drips a byte now and then beats any
	 * low-speed check on its own. */
	uint64_t transfer_ms = seconds_to_ms(r->settings.limits.transfer_seconds);
	bool from_pull = r->deadline_ms - now < transfer_ms;
	uint64_t timeout_ms = from_pull ? r->deadline_ms - now : transfer_ms;
	CURL *c = r->curl;
	curl_easy_reset(c);
	struct curl_slist *hdrs = NULL;
	char auth[8192];
	if (accept)
		hdrs = curl_slist_append(hdrs, accept);
	if (r->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", r->token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	char range[64];
	if (range_from) {
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)range_from);
		curl_easy_setopt(c, CURLOPT_RANGE, range);
	}
	if (r->basic && r->settings.username) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, r->settings.username);
		curl_easy_setopt(c, CURLOPT_PASSWORD, r->settings.password);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 8L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)IMAGE_STALL_BYTES_PER_SECOND);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)(seconds_to_ms(r->settings.limits.stall_seconds) / 1000));
	curl_easy_setopt(c, CURLOPT_USERAGENT, "capsule/" CAPSULE_VERSION_STRING);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xfer_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
	CURLcode cr = curl_easy_perform(c);
	curl_slist_free_all(hdrs);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	if (cr == CURLE_WRITE_ERROR)
		return -EFBIG; /* the sink refused: the caller knows why */
	int rc = cr == CURLE_OPERATION_TIMEDOUT ? timed_out(r, timeout_ms, from_pull) : 0;
	if (rc < 0)
		return rc;
	if (cr != CURLE_OK)
		return cap_err_plain(r->err, EHOSTUNREACH, "cannot reach registry '%s' (%s): %s", r->ref->registry, r->base,
				     curl_easy_strerror(cr));
	return 0;
}

static int fetch_token(struct reg *r, const struct image_challenge *ch)
{
	_cleanup_free_ char *scope = NULL;
	if (ch->scope)
		scope = strdup(ch->scope);
	else if (asprintf(&scope, "repository:%s:pull", r->ref->repository) < 0)
		scope = NULL;
	if (!scope)
		return cap_err(r->err, ENOMEM, "token request");
	char *es = curl_easy_escape(r->curl, scope, 0);
	char *esv = ch->service ? curl_easy_escape(r->curl, ch->service, 0) : NULL;
	_cleanup_free_ char *url = NULL;
	int n = asprintf(&url, "%s%cscope=%s%s%s", ch->realm, strchr(ch->realm, '?') ? '&' : '?', es ? es : "",
			 esv ? "&service=" : "", esv ? esv : "");
	curl_free(es);
	curl_free(esv);
	if (n < 0)
		return cap_err(r->err, ENOMEM, "token request");
	if (strncmp(url, "https://", 8) && !(r->o->insecure && !strncmp(url, "http://", 7)))
		return cap_err_plain(r->err, EPERM, "registry '%s' asks for a token from '%s', which is not https",
				     r->ref->registry, ch->realm);
	struct mem_sink m = { .max = 1u << 20 };
	struct http_resp resp;
	char asked_for[sizeof(r->what)];
	memcpy(asked_for, r->what, sizeof(asked_for));
	snprintf(r->what, sizeof(r->what), "token for %s from '%s'", asked_for, ch->realm);
	bool had_basic = r->basic;
	r->basic = r->settings.username != NULL;
	free(r->token);
	r->token = NULL;
	int rc = http_get(r, url, NULL, mem_write, &m, 0, &resp);
	r->basic = had_basic;
	memcpy(r->what, asked_for, sizeof(asked_for));
	if (rc < 0) {
		free(m.buf);
		return rc == -EFBIG ? cap_err_plain(r->err, EFBIG, "token answer from '%s' is too large", ch->realm) : rc;
	}
	if (resp.status == 401 || resp.status == 403) {
		free(m.buf);
		return cap_err_plain(r->err, EACCES, "registry '%s' refused the credentials%s (token service '%s' said %ld)",
				     r->ref->registry, r->settings.username ? "" : " (none configured)", ch->realm,
				     resp.status);
	}
	if (resp.status != 200 || !m.buf) {
		free(m.buf);
		return cap_err_plain(r->err, EPROTO, "token service '%s' answered %ld", ch->realm, resp.status);
	}
	char *tok = NULL;
	if (json_get_string(m.buf, m.len, "token", &tok) < 0 && json_get_string(m.buf, m.len, "access_token", &tok) < 0) {
		free(m.buf);
		return cap_err_plain(r->err, EPROTO, "token service '%s' sent no token", ch->realm);
	}
	free(m.buf);
	r->token = tok;
	return 0;
}

/* GET with authentication: on a 401, answer the challenge once and ask again. */
static int reg_get(struct reg *r, const char *url, const char *accept, curl_write_callback write, void *sink,
		   void (*reset)(void *), uint64_t range_from, struct http_resp *resp)
{
	int rc = http_get(r, url, accept, write, sink, range_from, resp);
	if (rc < 0 || resp->status != 401)
		return rc;
	struct image_challenge ch;
	int pr = image_challenge_parse(resp->www_auth, &ch);
	if (pr < 0)
		return cap_err_plain(r->err, EACCES, "registry '%s' asks for authentication with a challenge we cannot "
				     "answer: '%s'", r->ref->registry, resp->www_auth);
	if (ch.bearer) {
		rc = fetch_token(r, &ch);
	} else if (r->settings.username) {
		r->basic = true;
	} else {
		rc = cap_err_plain(r->err, EACCES, "registry '%s' needs a username and password: add them to the registry "
				   "configuration (docs/cli.md)", r->ref->registry);
	}
	image_challenge_free(&ch);
	if (rc < 0)
		return rc;
	if (reset)
		reset(sink);
	rc = http_get(r, url, accept, write, sink, range_from, resp);
	if (rc == 0 && resp->status == 401)
		return cap_err_plain(r->err, EACCES, "registry '%s' refused the credentials (wrong username or password?)",
				     r->ref->registry);
	return rc;
}

static void mem_reset(void *p)
{
	struct mem_sink *m = p;
	free(m->buf);
	m->buf = NULL;
	m->len = 0;
}

/* A manifest by tag or digest. *DIGEST_OUT is its digest: the one asked for (checked), or
 * for a tag the hash of what came (the registry's Docker-Content-Digest must agree). */
static int get_manifest(struct reg *r, const char *reference, char **body, size_t *len, char *media_type,
			size_t mt_size, char digest_out[IMAGE_DIGEST_LEN + 1])
{
	char url[1200];
	snprintf(url, sizeof(url), "%s/v2/%s/manifests/%s", r->base, r->ref->repository, reference);
	snprintf(r->what, sizeof(r->what), "manifest '%s' of '%s'", reference, r->ref->repository);
	struct mem_sink m = { .max = IMAGE_MAX_MANIFEST_BYTES };
	struct http_resp resp;
	int rc = reg_get(r, url, ACCEPT_MANIFESTS, mem_write, &m, mem_reset, 0, &resp);
	if (rc == -EFBIG)
		rc = cap_err_plain(r->err, EFBIG, "manifest '%s' of '%s' is larger than %u bytes", reference,
				   r->ref->repository, IMAGE_MAX_MANIFEST_BYTES);
	if (rc < 0) {
		free(m.buf);
		return rc;
	}
	if (resp.status == 404) {
		free(m.buf);
		return cap_err_plain(r->err, ENOENT, "image '%s/%s:%s' not found in registry '%s'", r->ref->registry,
				     r->ref->repository, reference, r->ref->registry);
	}
	if (resp.status != 200 || !m.buf) {
		free(m.buf);
		return cap_err_plain(r->err, EPROTO, "registry '%s' answered %ld for manifest '%s' of '%s'", r->ref->registry,
				     resp.status, reference, r->ref->repository);
	}
	image_sha256_buf(m.buf, m.len, digest_out);
	const char *want = image_digest_valid(reference) ? reference : (resp.docker_digest[0] ? resp.docker_digest : NULL);
	if (want && strcmp(want, digest_out)) {
		free(m.buf);
		return cap_err_plain(r->err, EBADMSG, "manifest '%s' of '%s' does not match its digest '%s' (it hashes to '%s'): "
				     "refused", reference, r->ref->repository, want, digest_out);
	}
	snprintf(media_type, mt_size, "%s", resp.content_type);
	char *semi = strchr(media_type, ';');
	if (semi)
		*semi = '\0';
	*body = m.buf;
	*len = m.len;
	return 0;
}

static void file_reset(void *p)
{
	struct file_sink *f = p;
	if (ftruncate(f->fd, 0) == 0)
		lseek(f->fd, 0, SEEK_SET);
	f->written = 0;
}

/* Two pulls of one blob at once: the second waits, then finds it stored. It waits no longer
 * than its own deadline allows (the holder may have a longer one); flock has no timeout of
 * its own, and a library may not take SIGALRM to make one, hence the polling. */
static int lock_download(struct reg *r, int fd, const char *tmppath)
{
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return cap_err(r->err, errno, "locking '%s'", tmppath);
		if (now_ms() >= r->deadline_ms)
			return cap_err_plain(r->err, ETIMEDOUT, "%s: another pull was still downloading it when this pull "
					     "passed its deadline of %llu s (\"pull_seconds\" in the registry "
					     "configuration's \"limits\")", r->what,
					     (unsigned long long)r->settings.limits.pull_seconds);
		usleep(100 * 1000);
	}
	return 0;
}

/* Download blob D into tmp/<hex>.partial (resuming what an earlier run left there), check
 * its digest and move it into blobs/. */
static int get_blob(struct reg *r, const struct image_descriptor *d)
{
	if (store_has_blob(r->images_fd, d->digest))
		return 0;
	if ((uint64_t)d->size > MAX_LAYER_BYTES)
		return cap_err_plain(r->err, EFBIG, "blob '%s' is larger than %llu bytes", d->digest,
				     (unsigned long long)MAX_LAYER_BYTES);
	snprintf(r->what, sizeof(r->what), "blob '%s' of '%s'", d->digest, r->ref->repository);
	int rc = store_check_room(r->images_fd, &r->settings.limits, (uint64_t)d->size, r->what, r->err);
	if (rc < 0)
		return rc;
	char tmpname[96], tmppath[128];
	snprintf(tmpname, sizeof(tmpname), "%s.partial", d->digest + 7);
	snprintf(tmppath, sizeof(tmppath), "tmp/%s", tmpname);
	_cleanup_close_ int fd = openat(r->images_fd, tmppath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cap_err(r->err, errno, "creating '%s'", tmppath);
	rc = lock_download(r, fd, tmppath);
	if (rc < 0)
		return rc;
	if (store_has_blob(r->images_fd, d->digest))
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cap_err(r->err, errno, "stat '%s'", tmppath);
	uint64_t have = (uint64_t)st.st_size;
	if (have > (uint64_t)d->size && ftruncate(fd, 0) == 0)
		have = 0;
	lseek(fd, (off_t)have, SEEK_SET);
	char url[1200];
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/%s", r->base, r->ref->repository, d->digest);
	struct file_sink f = { .fd = fd, .written = have, .max = (uint64_t)d->size };
	struct http_resp resp = { 0 };
	r->progress_digest = d->digest;
	r->progress_base = have;
	if (have < (uint64_t)d->size)
		rc = reg_get(r, url, NULL, file_write, &f, file_reset, have, &resp);
	else
		resp.status = 206;
	r->progress_digest = NULL;
	if (have && resp.status == 200 && (rc == 0 || (rc == -EFBIG && f.too_big))) {
		/* The server ignored the Range and sent the whole blob after what we had (which then
		 * overflows the declared size): start again from the first byte. */
		file_reset(&f);
		f.too_big = false;
		r->progress_digest = d->digest;
		r->progress_base = 0;
		rc = reg_get(r, url, NULL, file_write, &f, file_reset, 0, &resp);
		r->progress_digest = NULL;
	}
	if (rc == -EFBIG && f.too_big) {
		unlinkat(r->images_fd, tmppath, 0);
		return cap_err_plain(r->err, EBADMSG, "blob '%s' is larger than its manifest says (%lld bytes): refused, not "
				     "stored", d->digest, (long long)d->size);
	}
	if (rc == -EFBIG)
		return cap_err_plain(r->err, EIO, "writing '%s' failed", tmppath);
	if (rc < 0)
		return rc;
	if (resp.status == 404)
		return cap_err_plain(r->err, ENOENT, "blob '%s' of '%s' not found in registry '%s'", d->digest,
				     r->ref->repository, r->ref->registry);
	if (resp.status != 200 && resp.status != 206)
		return cap_err_plain(r->err, EPROTO, "registry '%s' answered %ld for blob '%s'", r->ref->registry, resp.status,
				     d->digest);
	if (r->o->progress)
		r->o->progress("verify", d->digest, (uint64_t)d->size, (uint64_t)d->size, r->o->payload);
	return store_commit_blob_file(r->images_fd, tmpname, d->digest, r->err);
}

/* Which base URL answers /v2/ (the API's version check, which also tells if the registry is
 * there at all): https first; plain http only for insecure registries. */
static int pick_base(struct reg *r, const char *host, bool insecure)
{
	static const char *const schemes[] = { "https", "http" };
	int rc = 0;
	for (size_t i = 0; i < (insecure ? 2u : 1u); i++) {
		snprintf(r->base, sizeof(r->base), "%s://%s", schemes[i], host);
		char url[600];
		snprintf(url, sizeof(url), "%s/v2/", r->base);
		snprintf(r->what, sizeof(r->what), "API check of registry '%s' (%s)", r->ref->registry, url);
		struct mem_sink m = { .max = 1u << 16 };
		struct http_resp resp;
		rc = http_get(r, url, NULL, mem_write, &m, 0, &resp);
		free(m.buf);
		if (rc == 0 || rc == -EFBIG)
			return 0;
	}
	return rc;
}

static int config_platform_check(struct reg *r, const struct image_descriptor *config)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	struct image_config ic;
	int rc = store_read_blob(r->images_fd, config->digest, IMAGE_MAX_CONFIG_BYTES, &text, &len, r->err);
	if (rc == 0 && (rc = image_config_parse(text, len, &ic, r->err)) == 0) {
		rc = image_config_platform_match(&ic, r->o->platform, r->ref->repository, r->err);
		image_config_free(&ic);
	}
	return rc;
}

static int pull_from(struct reg *r, char *digest_out)
{
	const char *reference = r->ref->digest[0] ? r->ref->digest : r->ref->tag;
	_cleanup_free_ char *body = NULL;
	size_t len;
	char mt[128], digest[IMAGE_DIGEST_LEN + 1];
	int rc = get_manifest(r, reference, &body, &len, mt, sizeof(mt), digest);
	if (rc < 0)
		return rc;
	struct image_manifest m;
	if ((rc = image_manifest_parse(body, len, mt, &m, r->err)) < 0)
		return cap_err_wrap(r->err, rc, "'%s'", r->ref->repository);
	if (m.is_index) {
		const struct image_descriptor *pick = image_index_select(&m, r->o->platform);
		if (!pick) {
			rc = cap_err_plain(r->err, ENOENT, "image '%s' has no variant for platform '%s'", r->ref->repository,
					   r->o->platform && *r->o->platform ? r->o->platform : "linux/amd64");
			image_manifest_free(&m);
			return rc;
		}
		char sub[IMAGE_DIGEST_LEN + 1];
		snprintf(sub, sizeof(sub), "%s", pick->digest);
		image_manifest_free(&m);
		free(body);
		body = NULL;
		if ((rc = get_manifest(r, sub, &body, &len, mt, sizeof(mt), digest)) < 0)
			return rc;
		if ((rc = image_manifest_parse(body, len, mt, &m, r->err)) < 0)
			return cap_err_wrap(r->err, rc, "'%s'", r->ref->repository);
		if (m.is_index) {
			image_manifest_free(&m);
			return cap_err_plain(r->err, EBADMSG, "index of '%s' points at another index", r->ref->repository);
		}
	}
	rc = get_blob(r, &m.config);
	/* A single-platform image says in its config what it was built for: one asked for by
	 * name must be that, before any layer is fetched. */
	if (rc == 0 && r->o->platform && *r->o->platform)
		rc = config_platform_check(r, &m.config);
	if (rc == 0) {
		for (size_t i = 0; i < m.nentries && rc == 0; i++) {
			const struct image_descriptor *d = &m.entries[i];
			if (store_has_layer(r->images_fd, d->digest))
				continue; /* de-duplicated: every image with this layer shares one copy */
			if ((rc = get_blob(r, d)) == 0) {
				if (r->o->progress)
					r->o->progress("unpack", d->digest, 0, (uint64_t)d->size, r->o->payload);
				rc = store_unpack_layer(r->images_fd, d->digest, &r->settings.limits, r->err);
			}
		}
	}
	image_manifest_free(&m);
	if (rc == 0)
		rc = store_put_blob(r->images_fd, digest, body, len, r->err);
	if (rc == 0)
		memcpy(digest_out, digest, sizeof(digest));
	return rc;
}

int registry_pull(const struct image_ref *ref, const struct registry_options *o, char **digest_out, capsule_error *err)
{
	pthread_once(&curl_once, curl_init_once);
	struct reg r = { .ref = ref, .o = o, .err = err, .images_fd = -1 };
	int rc = registry_settings_load(ref->registry, &r.settings, err);
	if (rc < 0)
		return rc;
	r.deadline_ms = now_ms() + seconds_to_ms(r.settings.limits.pull_seconds);
	snprintf(r.what, sizeof(r.what), "'%s'", ref->registry);
	if ((rc = store_open(&r.images_fd, err)) < 0)
		goto out;
	store_sweep_tmp(r.images_fd);
	r.curl = curl_easy_init();
	if (!r.curl) {
		rc = cap_err(err, ENOMEM, "starting an HTTP client");
		goto out;
	}
	struct registry_options eff = *o;
	/* As docker: loopback registries may speak plain HTTP. */
	eff.insecure = o->insecure || r.settings.insecure || image_registry_is_loopback(ref->registry);
	r.o = &eff;
	char digest[IMAGE_DIGEST_LEN + 1] = "";
	rc = -ENOENT;
	/* Mirrors first, each a "scheme://host[:port]" serving the same repositories; then the
	 * registry itself. */
	for (size_t i = 0; r.settings.mirrors && r.settings.mirrors[i]; i++) {
		const char *mirror = r.settings.mirrors[i];
		snprintf(r.base, sizeof(r.base), "%s", mirror);
		size_t bl = strlen(r.base);
		while (bl && r.base[bl - 1] == '/')
			r.base[--bl] = '\0';
		capsule_error ignored = { 0 };
		r.err = &ignored;
		free(r.token);
		r.token = NULL;
		rc = pull_from(&r, digest);
		r.err = err;
		if (rc == 0)
			break;
	}
	if (rc < 0) {
		free(r.token);
		r.token = NULL;
		r.basic = false;
		/* Docker Hub's API is not served at its name. */
		const char *api_host = strcmp(ref->registry, "docker.io") ? ref->registry : "registry-1.docker.io";
		rc = pick_base(&r, api_host, eff.insecure);
		if (rc == 0)
			rc = pull_from(&r, digest);
	}
	if (rc == 0 && digest_out && !(*digest_out = strdup(digest)))
		rc = cap_err(err, ENOMEM, "pull");
out:
	if (r.curl)
		curl_easy_cleanup(r.curl);
	free(r.token);
	registry_settings_free(&r.settings);
	if (r.images_fd >= 0)
		close(r.images_fd);
	return rc;
}
