/* Exact, fast kernels behind tasks/textscore.py: rouge_score 0.1.2's ROUGE and sacrebleu's
 * BLEU statistics over whole corpora.
 *
 * Python does what must follow Python's own string semantics (str.lower, str.rstrip, the
 * 13a replacements); these kernels do the per-token work: sacrebleu's 13a regular
 * expressions replayed as byte scans, token interning, clipped n-gram overlaps (small
 * per-pair hash tables), LCS lengths (bit-parallel) and rouge_score's summary-level union
 * LCS (its own table and backtracking rule, so ties resolve the same way). Pair kernels
 * release the GIL so the caller can split pairs across threads. Arrays are passed as
 * bytes-like buffers of int32 (token ids) and int64 (offsets, pair indices).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffers */

typedef struct {
    Py_buffer view;
    Py_ssize_t n;
} Array;

static int get_array(PyObject *obj, Array *a, Py_ssize_t item, const char *name) {
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (a->view.len % item != 0) {
        PyErr_Format(PyExc_ValueError, "%s: buffer length is not a multiple of %zd", name, item);
        PyBuffer_Release(&a->view);
        return -1;
    }
    a->n = a->view.len / item;
    return 0;
}

#define I32(a) ((const int32_t *)(a).view.buf)
#define I64(a) ((const int64_t *)(a).view.buf)

/* ---------------------------------------------------------- 13a tokenizer */

/* sacrebleu's first rule: every character of [{-~[-` -&(-+:-@/] gets a space each side. */
static int punct_13a(unsigned char c) {
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
           (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Byte length of the whitespace character (as str.split() sees it) at p, else 0. */
static Py_ssize_t space_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xc2 && p + 1 < end && (p[1] == 0x85 || p[1] == 0xa0)) return 2;
    if (p + 2 < end) {
        unsigned char d = p[1], e = p[2];
        if (c == 0xe1 && d == 0x9a && e == 0x80) return 3;                  /* U+1680 */
        if (c == 0xe2 && d == 0x80 && ((e >= 0x80 && e <= 0x8a) || e == 0xa8 || e == 0xa9 || e == 0xaf))
            return 3;                                                       /* U+2000-200A, 2028, 2029, 202F */
        if (c == 0xe2 && d == 0x81 && e == 0x9f) return 3;                  /* U+205F */
        if (c == 0xe3 && d == 0x80 && e == 0x80) return 3;                  /* U+3000 */
    }
    return 0;
}

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
} Bytes;

static int bytes_reserve(Bytes *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = realloc(b->buf, (size_t)cap);
    if (!p) return -1;
    b->buf = p;
    b->cap = cap;
    return 0;
}

/* Where the next '.' or ',' is at or after i (n when none), kept per character so each is
 * searched once with memchr. */
typedef struct {
    const unsigned char *s;
    Py_ssize_t n, dot, comma;
} Marks;

static Py_ssize_t find_from(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int c) {
    const void *p = i < n ? memchr(s + i, c, (size_t)(n - i)) : NULL;
    return p ? (const unsigned char *)p - s : n;
}

static Py_ssize_t next_mark(Marks *m, Py_ssize_t i, int kind) {
    if (kind == 4) return find_from(m->s, m->n, i, '-');
    if (m->dot < i) m->dot = find_from(m->s, m->n, i, '.');
    if (m->comma < i) m->comma = find_from(m->s, m->n, i, ',');
    return m->dot < m->comma ? m->dot : m->comma;
}

/* One re.sub pass of a two-character pattern, scanning left to right without overlap as
 * the regex engine does. kind 2: ([^0-9])([.,]) -> "\1 \2 "; kind 3: ([.,])([^0-9]) ->
 * " \1 \2"; kind 4: ([0-9])(-) -> "\1 \2 ". '\n' separates texts and never matches. Every
 * match holds a '.', ',' or '-', so the scan jumps from one of those to the next. A pass
 * at most doubles its input. */
static int rule_pass(const Bytes *in, Bytes *out, int kind) {
    out->len = 0;
    if (bytes_reserve(out, in->len * 2 + 16) < 0) return -1;
    const unsigned char *s = in->buf;
    unsigned char *o = out->buf;
    Py_ssize_t n = in->len, i = 0;
    Marks marks = {s, n, -1, -1};
    /* kind 3 starts its match at the mark; kinds 2 and 4 one character before it */
    Py_ssize_t lead = kind == 3 ? 0 : 1;
    while (i < n) {
        Py_ssize_t q = next_mark(&marks, i + lead, kind);
        if (q >= n) break;
        Py_ssize_t start = q - lead;
        if (start + 1 >= n) break;
        unsigned char a = s[start], b = s[start + 1];
        int hit = a != '\n' && b != '\n' &&
                  ((kind == 2 && !is_digit(a)) || (kind == 3 && !is_digit(b)) ||
                   (kind == 4 && is_digit(a)));
        if (!hit) {
            /* copy through the mark; a match cannot start before it any more */
            memcpy(o, s + i, (size_t)(q + 1 - i));
            o += q + 1 - i;
            i = q + 1;
            continue;
        }
        memcpy(o, s + i, (size_t)(start - i));
        o += start - i;
        if (kind == 3) *o++ = ' ';
        *o++ = a;
        *o++ = ' ';
        *o++ = b;
        if (kind != 3) *o++ = ' ';
        i = start + 2;
    }
    memcpy(o, s + i, (size_t)(n - i));
    o += n - i;
    out->len = o - out->buf;
    return 0;
}

static PyObject *tokenize_13a(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    const unsigned char *s = data.buf;
    Py_ssize_t n = data.len;
    Bytes a = {0}, b = {0};
    PyObject *result = NULL;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    failed = bytes_reserve(&a, n * 3 + 16) < 0;
    if (!failed) {
        unsigned char *o = a.buf;
        for (Py_ssize_t i = 0; i < n;) {
            unsigned char c = s[i];
            Py_ssize_t w = c == '\n' ? 0 : space_len(s + i, s + n);
            if (w) {
                /* whitespace of any kind becomes ' ' so the interner splits as str.split()
                 * does; no spaces around it: whitespace runs split alike whatever their
                 * length, and the later rules see a non-digit either way */
                memset(o, ' ', (size_t)w);
                o += w;
                i += w;
                continue;
            }
            if (c != '\n' && punct_13a(c)) {
                *o++ = ' '; *o++ = c; *o++ = ' ';
            } else {
                *o++ = c;
            }
            i++;
        }
        a.len = o - a.buf;
        failed = rule_pass(&a, &b, 2) < 0 || rule_pass(&b, &a, 3) < 0 || rule_pass(&a, &b, 4) < 0;
    }
    Py_END_ALLOW_THREADS
    if (failed) PyErr_NoMemory();
    else result = PyBytes_FromStringAndSize((const char *)b.buf, b.len);
    free(a.buf);
    free(b.buf);
    PyBuffer_Release(&data);
    return result;
}

/* ------------------------------------------------------------- interning */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A token table: the hash, length and id of each token, and its first bytes inline so a
 * lookup rarely touches the text again. */
#define INLINE 16
typedef struct {
    uint64_t hash;
    int64_t start;  /* where the first occurrence starts in the data */
    int32_t len;    /* -1 marks an empty slot */
    int32_t id;
    unsigned char head[INLINE];
} Slot;

typedef struct {
    Slot *slots;
    size_t mask, used;
} Table;

static Slot *new_slots(size_t cap) {
    Slot *slots = malloc(cap * sizeof(Slot));
    if (slots)
        for (size_t i = 0; i < cap; i++) slots[i].len = -1;
    return slots;
}

static int table_grow(Table *t) {
    size_t cap = t->slots ? (t->mask + 1) * 2 : 4096;
    Slot *slots = new_slots(cap);
    if (!slots) return -1;
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        if (t->slots[i].len < 0) continue;
        size_t j = t->slots[i].hash & (cap - 1);
        while (slots[j].len >= 0) j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

/* Id of the token data[start:start+len] whose hash is h, a new one if unseen; -1 when out
 * of memory. */
static int32_t intern_token(Table *t, const unsigned char *data, int64_t start, int32_t len,
                            uint64_t h) {
    const unsigned char *token = data + start;
    size_t head = len < INLINE ? (size_t)len : INLINE;
    size_t j = h & t->mask;
    while (t->slots[j].len >= 0) {
        Slot *s = &t->slots[j];
        if (s->hash == h && s->len == len && memcmp(s->head, token, head) == 0 &&
            (len <= INLINE || memcmp(data + s->start, token, (size_t)len) == 0))
            return s->id;
        j = (j + 1) & t->mask;
    }
    Slot *s = &t->slots[j];
    s->hash = h; s->start = start; s->len = len; s->id = (int32_t)t->used++;
    memcpy(s->head, token, head);
    int32_t id = s->id;
    if (t->used * 2 > t->mask && table_grow(t) < 0) return -1;
    return id;
}

typedef struct {
    void *buf;
    Py_ssize_t n, cap, item;
} Vec;

static int vec_push(Vec *v, const void *x) {
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap ? v->cap * 2 : 4096;
        void *p = realloc(v->buf, (size_t)(cap * v->item));
        if (!p) return -1;
        v->buf = p;
        v->cap = cap;
    }
    memcpy((char *)v->buf + v->n * v->item, x, (size_t)v->item);
    v->n++;
    return 0;
}

static PyObject *vec_bytes(Vec *v) {
    return PyBytes_FromStringAndSize(v->buf ? v->buf : "", v->n * v->item);
}

/* intern(data, text_sep, sentence_sep) splits data into texts at text_sep, texts into
 * sentences at sentence_sep (-1: none) and sentences into tokens at spaces, and returns
 * (ids int32, text_starts int64, sentence_starts int64, text_sentence_starts int64,
 * number of ids). Starts have one entry more than items; empty sentences are dropped. */
static PyObject *intern(PyObject *self, PyObject *args) {
    Py_buffer data;
    int text_sep, sent_sep;
    if (!PyArg_ParseTuple(args, "y*ii", &data, &text_sep, &sent_sep)) return NULL;
    const unsigned char *s = data.buf;
    Py_ssize_t n = data.len;
    Vec ids = {0, 0, 0, 4}, texts = {0, 0, 0, 8}, sents = {0, 0, 0, 8}, text_sents = {0, 0, 0, 8};
    Table table = {0};
    PyObject *result = NULL;
    int64_t zero = 0, sent_begin = 0;
    /* 0: token byte, 1: space, 2: sentence end, 3: text end */
    unsigned char kind[256] = {0};
    kind[' '] = 1;
    if (sent_sep >= 0) kind[(unsigned char)sent_sep] = 2;
    kind[(unsigned char)text_sep] = 3;
    if (table_grow(&table) < 0 || vec_push(&texts, &zero) < 0 || vec_push(&text_sents, &zero) < 0)
        goto nomem;
    for (Py_ssize_t i = 0; i <= n; i++) {
        int k = i == n ? 3 : kind[s[i]];
        if (k == 0) {
            /* FNV-1a over the token's bytes, then a final mix for the table index */
            uint64_t h = 1469598103934665603ULL;
            Py_ssize_t j = i;
            for (; j < n && !kind[s[j]]; j++) { h ^= s[j]; h *= 1099511628211ULL; }
            if (j - i > INT32_MAX) { PyErr_SetString(PyExc_ValueError, "token too long"); goto fail; }
            int32_t id = intern_token(&table, s, i, (int32_t)(j - i), mix64(h));
            if (id < 0 || vec_push(&ids, &id) < 0) goto nomem;
            i = j - 1;
            continue;
        }
        if (k >= 2) {
            if (ids.n > sent_begin && vec_push(&sents, &sent_begin) < 0) goto nomem;
            sent_begin = ids.n;
        }
        if (k == 3) {
            int64_t here = ids.n, nsent = sents.n;
            if (vec_push(&texts, &here) < 0 || vec_push(&text_sents, &nsent) < 0) goto nomem;
        }
    }
    if (vec_push(&sents, &sent_begin) < 0) goto nomem;
    result = Py_BuildValue("(NNNNn)", vec_bytes(&ids), vec_bytes(&texts), vec_bytes(&sents),
                           vec_bytes(&text_sents), (Py_ssize_t)table.used);
    goto done;
nomem:
    PyErr_NoMemory();
fail:
done:
    free(table.slots);
    free(ids.buf); free(texts.buf); free(sents.buf); free(text_sents.buf);
    PyBuffer_Release(&data);
    return result;
}

/* ------------------------------------------------------------- pair kernels */

/* Common arguments of the pair kernels: token ids, text starts, pair text indices. */
typedef struct {
    Array ids, texts, left, right;
    int64_t vocab;
} Pairs;

static void release_pairs(Pairs *p, int count) {
    Array *arrays[] = {&p->ids, &p->texts, &p->left, &p->right};
    for (int i = 0; i < count; i++) PyBuffer_Release(&arrays[i]->view);
}

static int get_pairs(PyObject *ids, PyObject *texts, PyObject *left, PyObject *right, Pairs *p) {
    if (get_array(ids, &p->ids, 4, "ids") < 0) return -1;
    if (get_array(texts, &p->texts, 8, "text_starts") < 0) { release_pairs(p, 1); return -1; }
    if (get_array(left, &p->left, 8, "left") < 0) { release_pairs(p, 2); return -1; }
    if (get_array(right, &p->right, 8, "right") < 0) { release_pairs(p, 3); return -1; }
    if (p->left.n != p->right.n) {
        PyErr_SetString(PyExc_ValueError, "left and right differ in length");
        release_pairs(p, 4);
        return -1;
    }
    int64_t ntexts = p->texts.n - 1;
    for (Py_ssize_t k = 0; k < p->left.n; k++) {
        if (I64(p->left)[k] < 0 || I64(p->left)[k] >= ntexts || I64(p->right)[k] < 0 ||
            I64(p->right)[k] >= ntexts) {
            PyErr_SetString(PyExc_IndexError, "pair refers to a text that does not exist");
            release_pairs(p, 4);
            return -1;
        }
    }
    for (Py_ssize_t k = 0; k < p->ids.n; k++) {
        if (I32(p->ids)[k] >= p->vocab) {
            PyErr_SetString(PyExc_ValueError, "id beyond the vocabulary size");
            release_pairs(p, 4);
            return -1;
        }
    }
    return 0;
}

/* A small open-addressing table of one text's n-grams: each slot holds where the n-gram
 * first occurs (-1: empty) and how many of it are still unmatched. Per pair it stays small
 * enough for the cache, which beats interning every n-gram of the corpus. */
typedef struct {
    int64_t *pos;
    int32_t *count;
    size_t cap;
} GramTable;

static uint64_t hash_gram(const int32_t *g, int order) {
    uint64_t h = (uint32_t)g[0];
    for (int i = 1; i < order; i++) h = h * 0x9e3779b97f4a7c15ULL + (uint32_t)g[i];
    return mix64(h);
}

static int same_gram(const int32_t *a, const int32_t *b, int order) {
    for (int i = 0; i < order; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int gram_reserve(GramTable *t, size_t cap) {
    if (cap <= t->cap) return 0;
    free(t->pos); free(t->count);
    t->pos = malloc(cap * sizeof(int64_t));
    t->count = malloc(cap * sizeof(int32_t));
    t->cap = (t->pos && t->count) ? cap : 0;
    return t->cap ? 0 : -1;
}

/* Clipped count of shared n-grams of a[0:n] and b[0:m]: sum of min(count in a, count in b). */
static int64_t gram_overlap(const int32_t *ids, int64_t a0, int64_t n, int64_t b0, int64_t m,
                            int order, GramTable *t) {
    int64_t na = n - order + 1, nb = m - order + 1;
    if (na <= 0 || nb <= 0) return 0;
    size_t cap = 16;
    while (cap < (size_t)nb * 2) cap *= 2;
    if (gram_reserve(t, cap) < 0) return -1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < cap; i++) t->pos[i] = -1;
    for (int64_t k = b0; k < b0 + nb; k++) {
        size_t j = hash_gram(ids + k, order) & mask;
        while (t->pos[j] >= 0 && !same_gram(ids + t->pos[j], ids + k, order)) j = (j + 1) & mask;
        if (t->pos[j] < 0) { t->pos[j] = k; t->count[j] = 0; }
        t->count[j]++;
    }
    int64_t hits = 0;
    for (int64_t k = a0; k < a0 + na; k++) {
        size_t j = hash_gram(ids + k, order) & mask;
        while (t->pos[j] >= 0 && !same_gram(ids + t->pos[j], ids + k, order)) j = (j + 1) & mask;
        if (t->pos[j] >= 0 && t->count[j] > 0) { hits++; t->count[j]--; }
    }
    return hits;
}

/* Scratch for bit-parallel LCS: a slot per vocabulary id, one match mask per distinct
 * token of the column sequence, and the rows of the recurrence. Row i has a 0 bit at
 * column j exactly where t[i][j+1] = t[i][j] + 1 in rouge_score's LCS table t, so
 * t[i][j] is the number of 0 bits below j. */
typedef struct {
    int32_t *slot;
    uint64_t *masks, *rows;
    size_t masks_cap, rows_cap;
} LcsScratch;

static int grow(uint64_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    free(*buf);
    *buf = malloc((need ? need : 1) * sizeof(uint64_t));
    *cap = *buf ? need : 0;
    return *buf ? 0 : -1;
}

/* Match masks of b[0:m], one per distinct token; returns the words per row, or -1 when out
 * of memory. */
static int64_t build_masks(const int32_t *b, int64_t m, LcsScratch *s) {
    size_t words = (size_t)((m + 63) / 64);
    int32_t used = 0;
    for (int64_t j = 0; j < m; j++)
        if (s->slot[b[j]] == 0) s->slot[b[j]] = ++used;
    if (grow(&s->masks, &s->masks_cap, words * (size_t)used) < 0) {
        for (int64_t j = 0; j < m; j++) s->slot[b[j]] = 0;
        return -1;
    }
    memset(s->masks, 0, words * (size_t)used * sizeof(uint64_t));
    for (int64_t j = 0; j < m; j++)
        s->masks[(size_t)(s->slot[b[j]] - 1) * words + (size_t)(j / 64)] |= 1ULL << (j % 64);
    return (int64_t)words;
}

static void clear_masks(const int32_t *b, int64_t m, LcsScratch *s) {
    for (int64_t j = 0; j < m; j++) s->slot[b[j]] = 0;
}

/* Next row from row v for a row token with match mask `mask` (NULL: no match): Hyyro's
 * V' = (V + (V & M)) | (V & ~M) with the carry across words. */
static void next_row(const uint64_t *v, uint64_t *out, const uint64_t *mask, size_t words) {
    if (!mask) { memcpy(out, v, words * sizeof(uint64_t)); return; }
    unsigned char carry = 0;
    for (size_t w = 0; w < words; w++) {
        uint64_t u = v[w] & mask[w], sum;
        unsigned char c1 = __builtin_add_overflow(v[w], u, &sum);
        unsigned char c2 = __builtin_add_overflow(sum, (uint64_t)carry, &sum);
        carry = c1 | c2;
        out[w] = sum | (v[w] & ~mask[w]);
    }
}

static const uint64_t *mask_of(const LcsScratch *s, int32_t token, size_t words) {
    int32_t slot = s->slot[token];
    return slot ? s->masks + (size_t)(slot - 1) * words : NULL;
}

/* t[i][j] from row i: the 0 bits among its first j columns. */
static int64_t table_at(const uint64_t *row, int64_t j) {
    int64_t ones = 0, w = 0;
    for (; (w + 1) * 64 <= j; w++) ones += __builtin_popcountll(row[w]);
    if (j % 64) ones += __builtin_popcountll(row[w] & ((1ULL << (j % 64)) - 1));
    return j - ones;
}

/* Length of the longest common subsequence of a[0:n] and b[0:m]. */
static int64_t lcs_length(const int32_t *a, int64_t n, const int32_t *b, int64_t m, LcsScratch *s) {
    if (n == 0 || m == 0) return 0;
    int64_t words = build_masks(b, m, s);
    if (words < 0 || grow(&s->rows, &s->rows_cap, (size_t)words) < 0) return -1;
    uint64_t *v = s->rows;
    for (int64_t w = 0; w < words; w++) v[w] = ~0ULL;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t *mask = mask_of(s, a[i], (size_t)words);
        if (mask) next_row(v, v, mask, (size_t)words);
    }
    int64_t result = table_at(v, m);
    clear_masks(b, m, s);
    return result;
}

/* rouge_score's lcs_ind(ref, can): the same table (kept as bit rows) and its walk back
 * (match -> diagonal; left when t[i][j-1] > t[i-1][j]; else up), so ties resolve as
 * rouge_score resolves them. Marks the ref positions taken. Masks of can must be built. */
static int mark_lcs(const int32_t *ref, int64_t n, const int32_t *can, int64_t m, int64_t words,
                    unsigned char *taken, LcsScratch *s) {
    if (grow(&s->rows, &s->rows_cap, (size_t)((n + 1) * words)) < 0) return -1;
    uint64_t *rows = s->rows;
    for (int64_t w = 0; w < words; w++) rows[w] = ~0ULL;
    for (int64_t i = 1; i <= n; i++)
        next_row(rows + (i - 1) * words, rows + i * words, mask_of(s, ref[i - 1], (size_t)words),
                 (size_t)words);
    int64_t i = n, j = m;
    while (i > 0 && j > 0) {
        if (ref[i - 1] == can[j - 1]) { taken[i - 1] = 1; i--; j--; }
        else if (table_at(rows + i * words, j - 1) > table_at(rows + (i - 1) * words, j)) j--;
        else i--;
    }
    return 0;
}

/* ------------------------------------------------------------- pair loop */

/* What a per-pair function reads: token ids, text starts and, for rougeLsum, sentences. */
typedef struct {
    const int32_t *ids;
    const int64_t *texts, *sents, *text_sents;
    int order;
} Corpus;

/* Per-thread scratch of every pair function; each pair leaves it as it found it. */
typedef struct {
    int32_t *counts; /* one per vocabulary id, all zero between pairs */
    GramTable grams;
    LcsScratch lcs;
    unsigned char *taken;
    size_t taken_cap;
} Scratch;

typedef int64_t (*PairFn)(const Corpus *c, int64_t left, int64_t right, Scratch *s);

/* Clipped overlap of the order-grams of texts left and right. */
static int64_t pair_overlap(const Corpus *c, int64_t left, int64_t right, Scratch *s) {
    const int32_t *ids = c->ids;
    int64_t l0 = c->texts[left], l1 = c->texts[left + 1];
    int64_t r0 = c->texts[right], r1 = c->texts[right + 1];
    if (c->order > 1) return gram_overlap(ids, l0, l1 - l0, r0, r1 - r0, c->order, &s->grams);
    /* unigrams: a count per vocabulary id, cheaper than hashing */
    int64_t hits = 0;
    for (int64_t i = r0; i < r1; i++) s->counts[ids[i]]++;
    for (int64_t i = l0; i < l1; i++)
        if (s->counts[ids[i]] > 0) { hits++; s->counts[ids[i]]--; }
    for (int64_t i = r0; i < r1; i++) s->counts[ids[i]] = 0;
    return hits;
}

static int64_t pair_lcs(const Corpus *c, int64_t left, int64_t right, Scratch *s) {
    int64_t l0 = c->texts[left], r0 = c->texts[right];
    return lcs_length(c->ids + l0, c->texts[left + 1] - l0, c->ids + r0,
                      c->texts[right + 1] - r0, &s->lcs);
}

/* rouge_score's rougeLsum hits of reference text ref and prediction text pred: the union LCS
 * of each reference sentence over the prediction's sentences, clipped by the prediction's
 * token counts (the reference's never bind: the union holds distinct positions). */
static int64_t pair_summary(const Corpus *c, int64_t ref, int64_t pred, Scratch *s) {
    const int32_t *ids = c->ids;
    const int64_t *ss = c->sents;
    int64_t r0 = c->texts[ref], rn = c->texts[ref + 1] - r0;
    int64_t p0 = c->texts[pred], pn = c->texts[pred + 1] - p0;
    int64_t rs0 = c->text_sents[ref], rs1 = c->text_sents[ref + 1];
    int64_t ps0 = c->text_sents[pred], ps1 = c->text_sents[pred + 1];
    if (rn == 0 || pn == 0) return 0;
    /* one sentence each: the union is the LCS itself, and every token of it fits */
    if (rs1 - rs0 <= 1 && ps1 - ps0 <= 1) return lcs_length(ids + r0, rn, ids + p0, pn, &s->lcs);
    if ((size_t)rn > s->taken_cap) {
        free(s->taken);
        s->taken = malloc((size_t)rn);
        s->taken_cap = s->taken ? (size_t)rn : 0;
        if (!s->taken) return -1;
    }
    memset(s->taken, 0, (size_t)rn);
    for (int64_t y = ps0; y < ps1; y++) {
        const int32_t *can = ids + ss[y];
        int64_t m = ss[y + 1] - ss[y], words = build_masks(can, m, &s->lcs);
        if (words < 0) return -1;
        for (int64_t x = rs0; x < rs1; x++)
            if (mark_lcs(ids + ss[x], ss[x + 1] - ss[x], can, m, words, s->taken + (ss[x] - r0),
                         &s->lcs) < 0)
                return -1;
        clear_masks(can, m, &s->lcs);
    }
    int64_t hits = 0;
    for (int64_t i = p0; i < p0 + pn; i++) s->counts[ids[i]]++;
    for (int64_t i = 0; i < rn; i++)
        if (s->taken[i] && s->counts[ids[r0 + i]] > 0) { hits++; s->counts[ids[r0 + i]]--; }
    for (int64_t i = p0; i < p0 + pn; i++) s->counts[ids[i]] = 0;
    return hits;
}

/* fn over every pair with the GIL released; int64 per pair, or NULL with MemoryError. */
static PyObject *run_pairs(const Corpus *c, const Pairs *p, PairFn fn) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, p->left.n * 8);
    if (!out) return NULL;
    size_t vocab = (size_t)(p->vocab > 0 ? p->vocab : 1);
    Scratch s = {calloc(vocab, sizeof(int32_t)), {NULL, NULL, 0},
                 {calloc(vocab, sizeof(int32_t)), NULL, NULL, 0, 0}, NULL, 0};
    int failed = !s.counts || !s.lcs.slot;
    int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < p->left.n && !failed; k++) {
        o[k] = fn(c, I64(p->left)[k], I64(p->right)[k], &s);
        failed = o[k] < 0;
    }
    Py_END_ALLOW_THREADS
    free(s.counts); free(s.grams.pos); free(s.grams.count);
    free(s.lcs.slot); free(s.lcs.masks); free(s.lcs.rows); free(s.taken);
    if (failed) { Py_DECREF(out); return PyErr_NoMemory(); }
    return out;
}

/* overlaps(ids, text_starts, left, right, vocab, order) -> int64 per pair: clipped n-gram
 * overlap, sum over n-grams of min(count in left, count in right). */
static PyObject *overlaps(PyObject *self, PyObject *args) {
    PyObject *a, *b, *c, *d;
    Pairs p;
    int order;
    if (!PyArg_ParseTuple(args, "OOOOLi", &a, &b, &c, &d, &p.vocab, &order)) return NULL;
    if (order < 1) { PyErr_SetString(PyExc_ValueError, "order must be at least 1"); return NULL; }
    if (get_pairs(a, b, c, d, &p) < 0) return NULL;
    Corpus corpus = {I32(p.ids), I64(p.texts), NULL, NULL, order};
    PyObject *out = run_pairs(&corpus, &p, pair_overlap);
    release_pairs(&p, 4);
    return out;
}

/* lcs(ids, text_starts, left, right, vocab) -> int64 per pair: LCS length of the texts. */
static PyObject *lcs(PyObject *self, PyObject *args) {
    PyObject *a, *b, *c, *d;
    Pairs p;
    if (!PyArg_ParseTuple(args, "OOOOL", &a, &b, &c, &d, &p.vocab)) return NULL;
    if (get_pairs(a, b, c, d, &p) < 0) return NULL;
    Corpus corpus = {I32(p.ids), I64(p.texts), NULL, NULL, 0};
    PyObject *out = run_pairs(&corpus, &p, pair_lcs);
    release_pairs(&p, 4);
    return out;
}

/* summary_lcs(ids, text_starts, sentence_starts, text_sentence_starts, refs, preds, vocab)
 * -> int64 per pair: rouge_score's rougeLsum hits. */
static PyObject *summary_lcs(PyObject *self, PyObject *args) {
    PyObject *a, *b, *c, *d, *o_sents, *o_text_sents;
    Pairs p;
    if (!PyArg_ParseTuple(args, "OOOOOOL", &a, &b, &o_sents, &o_text_sents, &c, &d, &p.vocab))
        return NULL;
    if (get_pairs(a, b, c, d, &p) < 0) return NULL;
    Array sents, text_sents;
    PyObject *out = NULL;
    if (get_array(o_sents, &sents, 8, "sentence_starts") < 0) { release_pairs(&p, 4); return NULL; }
    if (get_array(o_text_sents, &text_sents, 8, "text_sentence_starts") < 0) {
        PyBuffer_Release(&sents.view); release_pairs(&p, 4); return NULL;
    }
    if (text_sents.n != p.texts.n) {
        PyErr_SetString(PyExc_ValueError, "text_sentence_starts and text_starts differ in length");
    } else {
        Corpus corpus = {I32(p.ids), I64(p.texts), I64(sents), I64(text_sents), 0};
        out = run_pairs(&corpus, &p, pair_summary);
    }
    PyBuffer_Release(&sents.view); PyBuffer_Release(&text_sents.view);
    release_pairs(&p, 4);
    return out;
}

static PyMethodDef methods[] = {
    {"tokenize_13a", tokenize_13a, METH_VARARGS, "sacrebleu's 13a regular expressions over '\\n'-separated texts."},
    {"intern", intern, METH_VARARGS, "Split texts into sentences and tokens; tokens to int32 ids."},
    {"overlaps", overlaps, METH_VARARGS, "Clipped n-gram overlap counts per pair."},
    {"lcs", lcs, METH_VARARGS, "Longest common subsequence length per pair."},
    {"summary_lcs", summary_lcs, METH_VARARGS, "rouge_score's rougeLsum union-LCS hits per pair."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_textscore", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__textscore(void) { return PyModule_Create(&module); }
