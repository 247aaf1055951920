// Issue "rollback", end to end: `rollback N` brings back generation N's keys for real ssh
// clients and pins them; a newer store revision is then recorded but not applied until
// `resume`. Driven through the agent binary like an operator would, against a real sshd.

#include <ostream>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

bool logsIn(TestSshd& sshd, const KeyPair& key) {
  CommandOutput r = sshd.sshRun("akeneo", Credential::key(key), "id -un");
  UNSCOPED_INFO(key.publicKey << ": ssh exit " << r.exit << ", stdout '" << trim(r.out) << "', stderr " << r.err);
  return r.exit == 0 && trim(r.out) == "akeneo";
}

struct HistoryRow {
  int64_t generation;
  int64_t revision;
  std::string outcome;
  bool operator==(const HistoryRow& o) const {
    return generation == o.generation && revision == o.revision && outcome == o.outcome;
  }
};

std::ostream& operator<<(std::ostream& os, const HistoryRow& r) {
  return os << "{" << r.generation << ", rev " << r.revision << ", " << r.outcome << "}";
}

std::vector<HistoryRow> rows(const Poco::JSON::Array::Ptr& history) {
  std::vector<HistoryRow> out;
  for (size_t i = 0; i < history->size(); ++i) {
    auto o = history->getObject(unsigned(i));
    out.push_back({o->getValue<int64_t>("generation"), o->isNull("revision") ? -1 : o->getValue<int64_t>("revision"),
                   o->getValue<std::string>("outcome")});
  }
  return out;
}

}  // namespace

TEST_CASE("e2e rollback: rollback N restores N's keys and pins them until resume", "[e2e][rollback]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  KeyPair b = generateKey(host.tmp().path(), "ed25519", "b");
  KeyPair c = generateKey(host.tmp().path(), "ed25519", "c");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};

  // Revision 1 (generation 1): key A.
  doc.revision = 1;
  doc.keys = {{"k-a", a.publicLine, true, ""}};
  CommandOutput first = host.apply(doc);
  CHECK(contains(first.out, "outcome: applied, generation 1, revision 1"));
  CHECK(logsIn(host.sshd(), a));

  // Revision 2 (generation 2): A removed, B added.
  doc.revision = 2;
  doc.keys = {{"k-b", b.publicLine, true, ""}};
  CommandOutput second = host.apply(doc);
  CHECK(contains(second.out, "outcome: applied, generation 2, revision 2"));
  CHECK(logsIn(host.sshd(), b));
  CHECK_FALSE(logsIn(host.sshd(), a));

  // rollback 1: A again, B refused, pinned.
  CommandOutput rolled = host.run({"rollback", "1"});
  INFO("rollback 1: exit " << rolled.exit << "\nstdout:\n" << rolled.out << "\nstderr:\n" << rolled.err);
  REQUIRE(rolled.exit == 0);
  CHECK(contains(rolled.out, "outcome: rolled_back, generation 3, revision 1"));
  CHECK(contains(rolled.out, "pinned to generation 3"));
  CHECK(logsIn(host.sshd(), a));
  CHECK_FALSE(logsIn(host.sshd(), b));
  {
    auto status = host.status();
    CHECK(status->getValue<bool>("pinned"));
    CHECK(status->getValue<int64_t>("pinned_generation") == 3);
    CHECK(status->getValue<int64_t>("generation") == 3);
    CHECK(status->getValue<int64_t>("revision") == 1);
  }

  // Revision 3 in the store while pinned: fetched and recorded, not applied.
  doc.revision = 3;
  doc.keys = {{"k-c", c.publicLine, true, ""}};
  CommandOutput pinned = host.apply(doc);
  CHECK(contains(pinned.out, "outcome: recorded"));
  CHECK(logsIn(host.sshd(), a));
  CHECK_FALSE(logsIn(host.sshd(), c));
  CHECK_FALSE(logsIn(host.sshd(), b));
  {
    auto status = host.status();
    CHECK(status->getValue<bool>("pinned"));
    CHECK(status->getValue<int64_t>("generation") == 3);
    CHECK(status->getValue<int64_t>("revision") == 1);
    CHECK(status->getValue<int64_t>("store_revision") == 3);
  }

  // resume lifts the pin without touching the host; the next once applies revision 3.
  CommandOutput resumed = host.run({"resume"});
  INFO("resume: exit " << resumed.exit << "\nstdout:\n" << resumed.out << "\nstderr:\n" << resumed.err);
  REQUIRE(resumed.exit == 0);
  CHECK_FALSE(host.status()->getValue<bool>("pinned"));
  CHECK(logsIn(host.sshd(), a));
  CommandOutput applied = host.run({"once"});
  INFO("once after resume: exit " << applied.exit << "\nstdout:\n" << applied.out << "\nstderr:\n" << applied.err);
  REQUIRE(applied.exit == 0);
  CHECK(contains(applied.out, "outcome: applied, generation 5, revision 3"));
  CHECK(logsIn(host.sshd(), c));
  CHECK_FALSE(logsIn(host.sshd(), a));
  CHECK_FALSE(logsIn(host.sshd(), b));

  auto status = host.status();
  CHECK_FALSE(status->getValue<bool>("pinned"));
  CHECK(status->isNull("pinned_generation"));
  CHECK(status->getValue<int64_t>("generation") == 5);
  CHECK(status->getValue<int64_t>("revision") == 3);

  // history --json, newest first, with the outcome of every step.
  auto history = host.history();
  const std::vector<HistoryRow> expected{
      {5, 3, "applied"}, {4, 3, "recorded"}, {3, 1, "rolled_back"}, {2, 2, "applied"}, {1, 1, "applied"}};
  CHECK(rows(history) == expected);
  REQUIRE(history->size() == 5);
  CHECK(history->getObject(2)->getValue<int64_t>("rollback_of") == 1);
  CHECK(history->getObject(0)->getValue<int64_t>("changes") > 0);
  CHECK(history->getObject(1)->getValue<int64_t>("changes") == 0);
}
