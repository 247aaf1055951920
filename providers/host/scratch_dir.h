#pragma once
// A private scratch directory on the real file system (not below --root), for work that runs
// real binaries on throw-away files: validating a candidate sshd drop-in with `sshd -t`.
// Created with mkdtemp (mode 0700), removed with everything in it when the object goes away.

#include <string>
#include <string_view>

#include "providers/core/result.h"

namespace pim {

class ScratchDir {
 public:
  /// Creates a fresh directory `<parent>/<prefix>XXXXXX` with mkdtemp. Check valid() or
  /// status(): on failure the object holds the error and path() is empty.
  explicit ScratchDir(const std::string& prefix, const std::string& parent = "/tmp");
  /// Removes the directory and everything below it (nftw, depth first, no symlink following).
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  bool valid() const { return !path_.empty(); }
  /// Why creation failed; ok when valid().
  const Status& status() const { return status_; }
  /// The directory's real path ("/tmp/pim-sshd-check.Ab12Cd").
  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  /// Writes `name` inside the directory (created exclusively, mode 0600). Errors: kIo.
  Status writeFile(const std::string& name, std::string_view data) const;

 private:
  std::string path_;
  Status status_;
};

/// Removes a directory tree on the real file system without following symlinks.
/// Missing is success. Errors: kIo naming the first path that could not be removed.
Status removeTree(const std::string& path);

}  // namespace pim
