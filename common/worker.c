/*
 * Worker thread: a FIFO of jobs in, a FIFO of finished jobs out, an eventfd
 * to wake the loop. One mutex guards both lists; it is taken once per job on
 * each side, never per counter, so its cost is amortised by the batching
 * done in the jobs themselves.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "store.h"

struct worker_job {
    worker_job_fn job;
    worker_done_fn done;
    void *arg;
    struct worker_job *next;
};

struct job_list {
    struct worker_job *head;
    struct worker_job *tail;
};

struct worker {
    char name[32];
    struct store *store;   /* owned; used only on the worker thread */
    struct event_base *base; /* (ref) */
    struct event *notify_ev;
    int notify_fd;
    size_t max_jobs;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job_list todo;  /* guarded by lock */
    struct job_list done;  /* guarded by lock */
    size_t pending;        /* jobs submitted whose done has not run; guarded by lock */
    bool stopping;         /* guarded by lock */
    struct store_stats stats; /* the store's, after the last job; guarded by lock */
    pthread_t thread;
};

static void list_push(struct job_list *l, struct worker_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct worker_job *list_take_all(struct job_list *l)
{
    struct worker_job *head = l->head;
    l->head = l->tail = NULL;
    return head;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->todo.head == NULL && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        struct worker_job *j = w->todo.head;
        if (j == NULL)
            break; /* stopping and nothing left to run */
        w->todo.head = j->next;
        if (w->todo.head == NULL)
            w->todo.tail = NULL;
        pthread_mutex_unlock(&w->lock);

        struct store_stats st;
        if (j->job)
            j->job(w->store, j->arg);
        store_get_stats(w->store, &st);

        pthread_mutex_lock(&w->lock);
        w->stats = st;
        bool wake = w->done.head == NULL;
        list_push(&w->done, j);
        if (wake) {
            uint64_t one = 1;
            ssize_t rc = write(w->notify_fd, &one, sizeof(one));
            (void)rc; /* eventfd write only fails on counter overflow */
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void run_done(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct worker_job *j = list_take_all(&w->done);
    pthread_mutex_unlock(&w->lock);

    while (j) {
        struct worker_job *next = j->next;
        if (j->done)
            j->done(j->arg);
        free(j);
        pthread_mutex_lock(&w->lock);
        w->pending--;
        pthread_mutex_unlock(&w->lock);
        j = next;
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t n;
    ssize_t rc = read(fd, &n, sizeof(n));
    (void)rc; /* EAGAIN: another read already drained it */
    run_done(arg);
}

struct worker *worker_start(const char *name, struct store *store, struct event_base *base,
                            size_t max_jobs)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        goto err;
    snprintf(w->name, sizeof(w->name), "%s", name);
    w->store = store;
    w->base = base;
    w->max_jobs = max_jobs;
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->notify_fd < 0)
        goto err;
    w->notify_ev = event_new(base, w->notify_fd, EV_READ | EV_PERSIST, on_notify, w);
    if (w->notify_ev == NULL || event_add(w->notify_ev, NULL) != 0)
        goto err;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        goto err;
    }
    return w;

err:
    log_error("worker start failed name=%s error=%s", name, strerror(errno));
    if (w) {
        if (w->notify_ev)
            event_free(w->notify_ev);
        if (w->notify_fd > 0)
            close(w->notify_fd);
        free(w);
    }
    store_close(store);
    return NULL;
}

bool worker_submit(struct worker *w, worker_job_fn job, worker_done_fn done, void *arg)
{
    struct worker_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return false;
    j->job = job;
    j->done = done;
    j->arg = arg;

    pthread_mutex_lock(&w->lock);
    if (w->stopping || w->pending >= w->max_jobs) {
        pthread_mutex_unlock(&w->lock);
        free(j);
        return false;
    }
    w->pending++;
    list_push(&w->todo, j);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return true;
}

void worker_store_stats(struct worker *w, struct store_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}

size_t worker_pending(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = w->pending;
    pthread_mutex_unlock(&w->lock);
    return n;
}

void worker_stop(struct worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);

    /* The thread ran every queued job; their done callbacks still belong to
     * the loop's thread, which is the caller. */
    run_done(w);

    event_free(w->notify_ev);
    close(w->notify_fd);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    store_close(w->store);
    free(w);
}
