/*
 * producer_reopen_race -- a consumer's shmr_consumer_check_producer() finds the
 * producer dead; before it closes the stream (hook 5) a replacement producer
 * takes the role and re-opens the stream.
 *
 * Race pinned: the check used to CAS close_reason OPEN -> PRODUCER_DIED by value,
 * so it still succeeded after the replacement stored OPEN again: the stream was
 * marked closed while a live producer owned it and consumers saw end-of-stream
 * (old core: check_producer -> 2, close_reason 2, pop -> -SHMR_ECLOSED).
 *
 * Correct behaviour: the close CAS is tied to the stream generation read before
 * the owner, which the replacement bumped, so it fails: check_producer returns
 * SHMR_OPEN, the stream stays open, the consumer reads the old and the new
 * producer's records and keeps waiting (pop -> 0, not ECLOSED); a real close by
 * the replacement still ends the stream.
 */
#include "common.h"

static shmr_ring *R;
static shmr_producer *P2;
static int armed;

void shmr_test_hook(int site)
{
    if (site == SHMR_HOOK_PRODUCER_DEAD && armed) { /* producer judged dead, stream not yet closed */
        armed = 0;
        CHECK(shmr_producer_open(R, &P2));
    }
}

int main(void)
{
    t_init("producer_reopen_race", 10);
    R = t_mk(t_segname("reopen-race"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8);
    shmr_consumer *c;
    CHECK(shmr_consumer_open(R, 0, &c));
    pid_t pid = t_fork();
    if (pid == 0) {
        shmr_producer *p;
        CHECK(shmr_producer_open(R, &p));
        if (t_push_seq(p, 0, 2) != 2)
            t_child_fail(3, "old producer's push failed");
        _exit(0); /* dies without closing the stream */
    }
    int st = t_reap(pid);
    if (st != 0)
        t_fatal("old producer child exited with %d", st);

    armed = 1;
    int reason = shmr_consumer_check_producer(c);
    if (armed || !P2)
        t_fatal("hook 5 never ran: check_producer did not find the old producer dead (returned %d)", reason);
    EXPECT_EQ(reason, SHMR_OPEN, "check_producer result (a live replacement owns the stream)");
    EXPECT_EQ(shmr_close_reason(R), SHMR_OPEN, "close_reason after the race");
    EXPECT_EQ(t_push_seq(P2, 100, 2), 2, "replacement producer's push");

    uint64_t out[8], want[4] = {0, 1, 100, 101};
    int64_t got = 0, n;
    while (got < 8 && (n = shmr_pop(c, out + got, 8 - (uint64_t)got, NULL)) > 0)
        got += n;
    EXPECT_EQ(got, 4, "records popped (old producer's 2 + replacement's 2)");
    for (int64_t i = 0; i < got && i < 4; i++)
        EXPECT_EQ(out[i], want[i], "record %" PRId64, i);
    EXPECT_EQ(shmr_pop(c, out, 8, NULL), 0, "pop on the drained open stream (-%d = ECLOSED)", SHMR_ECLOSED);
    EXPECT_EQ(shmr_consumer_check_producer(c), SHMR_OPEN, "second check_producer");

    EXPECT_EQ(t_push_seq(P2, 200, 2), 2, "replacement's second push");
    EXPECT_EQ(shmr_pop(c, out, 8, NULL), 2, "pop of the replacement's second push");
    CHECK(shmr_producer_close_stream(P2));
    EXPECT_EQ(shmr_pop(c, out, 8, NULL), -SHMR_ECLOSED, "pop after the replacement closed the stream");
    EXPECT_EQ(shmr_close_reason(R), SHMR_CLOSED_BY_PRODUCER, "close_reason after the replacement closed");
    shmr_consumer_free(c);
    shmr_producer_free(P2);
    t_finish("a dead-producer check racing a replacement producer's open leaves the stream open");
}
