#include "loadprofile.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "loadunits.h"
#include "util.h"

#define US_PER_S 1e6
/* The ramp is a tenth of the window, at most this long (before speedup). */
#define MAX_RAMP_US 2e6
/* The decay constant: the rate at the end of the window is e^-3 = 5 % of the peak. */
#define DECAY_CONSTANTS 3.0
/* Concert: the first answers of a question arrive this long after the open
 * call: every ingest node sees a state change within a second (API.md
 * section 3), so by then the question is open everywhere. At most half of
 * the idle part of the period. */
#define CONCERT_LEAD_US 1e6
/* Below this a window cannot be shaped in whole microseconds. */
#define MIN_WINDOW_US 10e3

/* Cumulative area of one burst at a peak of 1/s, in seconds, t in us. */
static double burst_area(const struct loadprofile *p, double t_us)
{
    double r = p->ramp_us / US_PER_S;
    double tau = p->tau_us / US_PER_S;
    if (t_us >= p->window_us)
        t_us = p->window_us;
    double t = t_us / US_PER_S;
    if (t <= 0)
        return 0;
    if (t < r)
        return t * t / (2 * r);
    return r / 2 + tau * (1 - exp(-(t - r) / tau));
}

/* Inverse of burst_area: the time (us) at which the area reaches x. */
static double burst_inverse(const struct loadprofile *p, double x)
{
    double r = p->ramp_us / US_PER_S;
    double tau = p->tau_us / US_PER_S;
    double t;
    if (x <= r / 2) {
        t = sqrt(2 * r * x);
    } else {
        double f = 1 - (x - r / 2) / tau;
        t = f <= 0 ? p->window_us / US_PER_S : r - tau * log(f);
    }
    double us = t * US_PER_S;
    return us > p->window_us ? p->window_us : us;
}

bool loadprofile_parse_stages(const char *s, struct loadprofile_stage *out, uint32_t *n,
                              char *err, size_t errlen)
{
    if (s == NULL || *s == '\0')
        return util_fail(err, errlen, "expected DURATION:RATE[,DURATION:RATE...] such as 10s:1k,1m:1k");
    uint32_t k = 0;
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, ",");
        char item[64];
        if (len == 0 || len >= sizeof(item))
            return util_fail(err, errlen, "stage %u: expected DURATION:RATE such as 30s:20k", k + 1);
        memcpy(item, p, len);
        item[len] = '\0';
        char *colon = strchr(item, ':');
        if (colon == NULL)
            return util_fail(err, errlen, "stage %u (%s): expected DURATION:RATE such as 30s:20k",
                             k + 1, item);
        *colon = '\0';
        if (k == LOADPROFILE_STAGES_MAX)
            return util_fail(err, errlen, "at most %d stages", LOADPROFILE_STAGES_MAX);
        if (!loadunits_duration_us(item, 1000, 24ull * 3600 * 1000000, &out[k].duration_us))
            return util_fail(err, errlen, "stage %u: duration %s: expected 1ms to 24h (500ms, 30s, 2m)",
                             k + 1, item);
        if (!loadunits_rate(colon + 1, 0, 10e6, &out[k].rate))
            return util_fail(err, errlen, "stage %u: rate %s: expected 0 to 10M per second (0, 500, 20k)",
                             k + 1, colon + 1);
        k++;
        p += len;
        if (*p == '\0')
            break;
        p++; /* the comma: a trailing one leaves an empty stage, refused above */
    }
    *n = k;
    return true;
}

/* Within stage i, the time (us from its start) at which c more arrivals than
 * at its start are due: r0 t + (r1 - r0) t^2 / 2D = c, solved in the form
 * that stays exact when r0 is 0 or the stage is flat. */
static double stage_inverse(const struct loadprofile *p, uint32_t i, double c)
{
    double r0 = i == 0 ? 0 : p->p.stages[i - 1].rate;
    double r1 = p->p.stages[i].rate;
    double d = (double)p->p.stages[i].duration_us / US_PER_S;
    double a = (r1 - r0) / (2 * d);
    double disc = r0 * r0 + 4 * a * c;
    double t = disc <= 0 ? d : 2 * c / (r0 + sqrt(disc));
    if (t > d)
        t = d;
    return t * US_PER_S;
}

static bool init_stages(struct loadprofile *p, char *err, size_t errlen)
{
    double t = 0, count = 0, prev = 0;
    for (uint32_t i = 0; i < p->p.n_stages; i++) {
        const struct loadprofile_stage *st = &p->p.stages[i];
        double d = (double)st->duration_us / US_PER_S;
        t += (double)st->duration_us;
        count += (prev + st->rate) / 2 * d;
        p->stage_end_us[i] = t;
        p->stage_count[i] = count;
        prev = st->rate;
    }
    if (count < 1)
        return util_fail(err, errlen, "--stages: the stages add up to less than one request");
    if (count > 1e15)
        return util_fail(err, errlen, "--stages: too many requests");
    p->p.duration_us = (uint64_t)t;
    /* arrival m is due where the curve reaches m + 0.5 */
    uint64_t total = (uint64_t)floor(count + 0.5);
    if (p->p.requests == 0 || p->p.requests > total)
        p->p.requests = total;
    return true;
}

bool loadprofile_init(struct loadprofile *p, const struct loadprofile_params *params, char *err,
                      size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->p = *params;
    if (params->kind == LOADPROFILE_STEADY && params->n_stages > 0) {
        if (params->n_stages > LOADPROFILE_STAGES_MAX)
            return util_fail(err, errlen, "--stages: at most %d", LOADPROFILE_STAGES_MAX);
        return init_stages(p, err, errlen);
    }
    if (!(params->rate > 0) || !isfinite(params->rate))
        return util_fail(err, errlen, "--rate must be positive");
    if (!(params->speedup >= 1) || !isfinite(params->speedup))
        return util_fail(err, errlen, "--speedup must be at least 1");
    if (params->kind == LOADPROFILE_STEADY) {
        if (params->duration_us == 0 && params->requests == 0)
            return util_fail(err, errlen, "the steady profile needs --duration and/or --requests");
        return true;
    }
    if (params->kind == LOADPROFILE_BURST && params->duration_us == 0 && params->requests == 0)
        return util_fail(err, errlen, "the burst profile needs --duration and/or --requests");
    if (params->kind == LOADPROFILE_CONCERT && params->bursts == 0)
        return util_fail(err, errlen, "the concert needs at least one question");
    if (params->window_us == 0 || params->window_us > params->period_us)
        return util_fail(err, errlen, "--window must be positive and at most --period");

    p->period_us = (double)params->period_us / params->speedup;
    p->window_us = (double)params->window_us / params->speedup;
    if (p->window_us < MIN_WINDOW_US)
        return util_fail(err, errlen, "--window divided by --speedup must be at least 10ms");
    double ramp = (double)params->window_us / 10;
    if (ramp > MAX_RAMP_US)
        ramp = MAX_RAMP_US;
    p->ramp_us = ramp / params->speedup;
    p->tau_us = (p->window_us - p->ramp_us) / DECAY_CONSTANTS;
    if (params->kind == LOADPROFILE_CONCERT) {
        double idle = p->period_us - p->window_us;
        p->lead_us = idle / 2 < CONCERT_LEAD_US ? idle / 2 : CONCERT_LEAD_US;
    }
    p->area_s = burst_area(p, p->window_us);
    double k = floor(params->rate * p->area_s + 0.5);
    if (k < 1)
        return util_fail(err, errlen,
                         "--rate %.6g/s is too low: a burst of that peak over the window has no answer",
                         params->rate);
    if (k > 1e15)
        return util_fail(err, errlen, "--rate too high for the window");
    p->per_burst = (uint64_t)k;
    return true;
}

bool loadprofile_arrival(const struct loadprofile *p, uint64_t m, struct loadprofile_arrival *a)
{
    if (p->p.requests != 0 && m >= p->p.requests)
        return false;
    double t;
    uint32_t burst = 0;
    uint64_t k = m;
    if (p->p.kind == LOADPROFILE_STEADY && p->p.n_stages > 0) {
        double x = (double)m + 0.5;
        uint32_t i = 0;
        while (i + 1 < p->p.n_stages && p->stage_count[i] < x)
            i++;
        if (p->stage_count[i] < x)
            return false;
        double before = i == 0 ? 0 : p->stage_count[i - 1];
        double start = i == 0 ? 0 : p->stage_end_us[i - 1];
        t = start + stage_inverse(p, i, x - before);
    } else if (p->p.kind == LOADPROFILE_STEADY) {
        t = (double)m * US_PER_S / p->p.rate;
    } else {
        uint64_t b = m / p->per_burst;
        if (b > UINT32_MAX || (p->p.bursts != 0 && b >= p->p.bursts))
            return false;
        burst = (uint32_t)b;
        k = m % p->per_burst;
        double x = ((double)k + 0.5) * p->area_s / (double)p->per_burst;
        t = loadprofile_burst_start_us(p, burst) + burst_inverse(p, x);
    }
    if (p->p.duration_us != 0 && t >= (double)p->p.duration_us)
        return false;
    if (t >= 1.8e19)
        return false;
    a->t_us = (uint64_t)t;
    a->burst = burst;
    a->k = k;
    return true;
}

double loadprofile_rate_at(const struct loadprofile *p, double t_us)
{
    if (t_us < 0 || (p->p.duration_us != 0 && t_us >= (double)p->p.duration_us))
        return 0;
    if (p->p.kind == LOADPROFILE_STEADY && p->p.n_stages > 0) {
        uint32_t i = 0;
        while (i + 1 < p->p.n_stages && p->stage_end_us[i] <= t_us)
            i++;
        double start = i == 0 ? 0 : p->stage_end_us[i - 1];
        double r0 = i == 0 ? 0 : p->p.stages[i - 1].rate;
        double f = (t_us - start) / (double)p->p.stages[i].duration_us;
        return r0 + (p->p.stages[i].rate - r0) * f;
    }
    if (p->p.kind == LOADPROFILE_STEADY)
        return p->p.rate;
    double rel = t_us - p->lead_us;
    if (rel < 0)
        return 0;
    double b = floor(rel / p->period_us);
    if (p->p.bursts != 0 && b >= p->p.bursts)
        return 0;
    double in = rel - b * p->period_us;
    if (in >= p->window_us)
        return 0;
    /* The deterministic inversion scales the curve to a whole number of
     * answers per burst; the rate is scaled alike so both agree. */
    double scale = (double)p->per_burst / (p->p.rate * p->area_s);
    if (in < p->ramp_us)
        return p->p.rate * scale * in / p->ramp_us;
    return p->p.rate * scale * exp(-(in - p->ramp_us) / p->tau_us);
}

double loadprofile_burst_start_us(const struct loadprofile *p, uint32_t b)
{
    return p->lead_us + (double)b * p->period_us;
}

double loadprofile_burst_end_us(const struct loadprofile *p, uint32_t b)
{
    return loadprofile_burst_start_us(p, b) + p->window_us;
}

double loadprofile_end_us(const struct loadprofile *p)
{
    double end = INFINITY;
    if (p->p.duration_us != 0)
        end = (double)p->p.duration_us;
    if (p->p.kind != LOADPROFILE_STEADY && p->p.bursts != 0) {
        double e = loadprofile_burst_end_us(p, p->p.bursts - 1);
        if (e < end)
            end = e;
    }
    if (p->p.requests != 0) {
        struct loadprofile_arrival a;
        if (loadprofile_arrival(p, p->p.requests - 1, &a) && (double)a.t_us + 1 < end)
            end = (double)a.t_us + 1;
    }
    return end;
}
