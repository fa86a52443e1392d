/*
 * pick_new_lane -- a queue getter's pick must not pass over an item whose
 * lane was counted while the pick ran, when a later put is visible.
 *
 * Producer PY opens lane 0. The getter thread starts shmr_mpq_pick and is
 * parked at the start of its first pass (SHMR_HOOK_PICK_PASS). Meanwhile a
 * new producer PX opens lane 1 (counting it in lanes_used), puts X and exits;
 * only then is PY told to put Y. X's put returned before Y's began, so the
 * pick, released, must name X's lane. A pick that read lanes_used before its
 * pass (or stopped because one lane was in use) scanned lane 0 only and named
 * Y's (verify/qpick.pml, mutant_pick_used_once / mutant_pick_one_lane).
 */
#include "common.h"

#include "mpqueue.h"

static __thread int parks_here; /* only the getter thread parks */
static sem_t parked, go;

void shmr_test_hook(int site)
{
    if (site == SHMR_HOOK_PICK_PASS && parks_here) {
        parks_here = 0; /* the first pass only */
        sem_post(&parked);
        while (sem_wait(&go) != 0)
            ;
    }
}

struct getter {
    const char *name;
    int rc;
    uint32_t lane;
    uint64_t count;
};

static void *getter_main(void *arg)
{
    struct getter *g = arg;
    shmr_mpq *q;
    CHECK(shmr_mpq_attach(g->name, &q));
    parks_here = 1;
    g->rc = shmr_mpq_pick(q, 1, &g->lane, &g->count);
    shmr_mpq_detach(q);
    return NULL;
}

/* Opens a producer in a child of its own; returns its lane. Child: exits 0
 * after one put of value v, once a byte arrives on go_fd (-1: at once). */
static pid_t producer(const char *name, uint64_t v, int go_fd, int lane_fd)
{
    pid_t pid = t_fork();
    if (pid != 0)
        return pid;
    shmr_mpq *q;
    shmr_ring *r;
    shmr_producer *p;
    uint32_t lane;
    if (shmr_mpq_attach(name, &q) || shmr_mpq_producer_open(q, &r, &p, &lane))
        t_child_fail(3, "producer open failed");
    if (write(lane_fd, &lane, sizeof lane) != sizeof lane)
        t_child_fail(3, "lane report failed");
    char c;
    if (go_fd >= 0 && read(go_fd, &c, 1) != 1)
        t_child_fail(3, "token read failed");
    void *body;
    uint64_t consumed = 0;
    if (shmr_mpq_admit(q, lane, 1, &consumed) != 1 || shmr_msg_reserve(p, 1, sizeof v, &body) != 1)
        t_child_fail(3, "put failed");
    memcpy(body, &v, sizeof v);
    if (shmr_msg_commit(p) != 1)
        t_child_fail(3, "commit published nothing");
    _exit(0);
}

int main(void)
{
    t_init("pick_new_lane", 60);
    const char *name = t_segname("pnl");
    shmr_mpq_params prm = {2, 2, 4096, 0};
    shmr_mpq *q;
    CHECK(shmr_mpq_create(name, &prm, 0600, &q));
    sem_init(&parked, 0, 0);
    sem_init(&go, 0, 0);
    int lanes[2], token[2];
    if (pipe(lanes) || pipe(token))
        t_fatal("pipe: %s", strerror(errno));

    uint32_t ly, lx;
    pid_t py = producer(name, 2, token[0], lanes[1]);
    if (read(lanes[0], &ly, sizeof ly) != sizeof ly)
        t_fatal("PY reported no lane");
    EXPECT_EQ(shmr_mpq_lanes_used(q), 1, "lanes in use before the pick");

    struct getter g = {name, -1, 99, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, getter_main, &g))
        t_fatal("pthread_create");
    while (sem_wait(&parked) != 0)
        ;

    pid_t px = producer(name, 1, -1, lanes[1]);
    if (read(lanes[0], &lx, sizeof lx) != sizeof lx)
        t_fatal("PX reported no lane");
    EXPECT_EQ(t_reap(px), 0, "PX's exit status (its put returned)");
    if (write(token[1], "t", 1) != 1)
        t_fatal("token write failed");
    EXPECT_EQ(t_reap(py), 0, "PY's exit status");
    EXPECT(lx != ly, "X and Y in different lanes (%u, %u)", lx, ly);
    EXPECT_EQ(shmr_mpq_items(q), 2, "items queued");

    sem_post(&go);
    pthread_join(th, NULL);
    EXPECT_EQ(g.rc, 1, "the pick found an item");
    EXPECT_EQ(g.lane, lx, "the lane the pick named (X's lane is the older put's; Y's is %u)", ly);
    shmr_mpq_detach(q);
    t_finish("a lane counted during the pick was scanned; X named before Y");
}
