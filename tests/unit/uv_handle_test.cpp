// UvHandle (agent/daemon/uv_handle.h) on a real libuv loop: a handle is closed once, by reset()
// or destruction, its memory freed by the close callback (AddressSanitizer's leak check sees a
// handle never closed or freed twice), nothing is held after a failed init, a move hands the
// handle over without closing it, and the loop closes once it has run the closes.
#include "agent/daemon/uv_handle.h"

#include <catch2/catch.hpp>
#include <utility>

using namespace pim;

namespace {

// A loop that must close cleanly at the end of the test (every handle closed and freed).
struct Loop {
  uv_loop_t loop{};
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Handles on the loop, closing ones included.
  int handles() {
    int n = 0;
    uv_walk(
        &loop, [](uv_handle_t*, void* arg) { ++*static_cast<int*>(arg); }, &n);
    return n;
  }
};

}  // namespace

TEST_CASE("uv handle: init, callbacks with the owner as data, reset closes once", "[uv_handle]") {
  Loop l;
  UvHandle<uv_timer_t> timer;
  CHECK_FALSE(timer);
  int owner = 0;
  REQUIRE(timer.init(&l.loop, &owner, uv_timer_init) == 0);
  REQUIRE(timer);
  CHECK(timer.get()->data == &owner);
  uv_timer_start(
      timer.get(), [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 0, 0);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(owner == 1);
  CHECK(l.handles() == 1);
  timer.reset();
  CHECK_FALSE(timer);
  timer.reset();            // idempotent: never closed twice
  CHECK(l.handles() == 1);  // closing until the loop runs the close callback
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(l.handles() == 0);
}

TEST_CASE("uv handle: a handle closed before its callback ran is not called", "[uv_handle]") {
  Loop l;
  int calls = 0;
  {
    UvHandle<uv_timer_t> timer;
    REQUIRE(timer.init(&l.loop, &calls, uv_timer_init) == 0);
    uv_timer_start(
        timer.get(), [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 0, 0);
  }  // destruction closes it
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(calls == 0);
  CHECK(l.handles() == 0);
}

TEST_CASE("uv handle: moves hand the handle over; assignment closes the one held", "[uv_handle]") {
  Loop l;
  UvHandle<uv_timer_t> a;
  REQUIRE(a.init(&l.loop, nullptr, uv_timer_init) == 0);
  uv_timer_t* first = a.get();
  UvHandle<uv_timer_t> b(std::move(a));
  CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): the contract
  CHECK(b.get() == first);
  UvHandle<uv_timer_t> c;
  REQUIRE(c.init(&l.loop, nullptr, uv_timer_init) == 0);
  c = std::move(b);  // c's own handle is closed
  CHECK(c.get() == first);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(l.handles() == 1);
  // init() again closes the one held first.
  REQUIRE(c.init(&l.loop, nullptr, uv_timer_init) == 0);
  CHECK(c.get() != nullptr);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(l.handles() == 1);
  c.reset();
}

TEST_CASE("uv handle: a failed init holds nothing and leaves nothing on the loop", "[uv_handle]") {
  Loop l;
  UvHandle<uv_poll_t> poll;
  CHECK(poll.init(&l.loop, nullptr, uv_poll_init, -1) < 0);  // not a descriptor
  CHECK_FALSE(poll);
  CHECK(l.handles() == 0);
  // Other kinds, with their init's arguments.
  UvHandle<uv_async_t> async;
  REQUIRE(async.init(&l.loop, nullptr, uv_async_init, [](uv_async_t*) {}) == 0);
  UvHandle<uv_signal_t> signal;
  REQUIRE(signal.init(&l.loop, nullptr, uv_signal_init) == 0);
  UvHandle<uv_fs_event_t> events;
  REQUIRE(events.init(&l.loop, nullptr, uv_fs_event_init) == 0);
  CHECK(l.handles() == 3);
}  // closed by their destructors, freed when ~Loop runs the loop
