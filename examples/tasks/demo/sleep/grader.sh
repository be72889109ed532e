# SPDX-License-Identifier: MIT
# demo/sleep: a slow grader (10 minutes): long enough to be killed while it runs.
echo "sleeping"
sleep 600
feedback success 100 "Woke up"
