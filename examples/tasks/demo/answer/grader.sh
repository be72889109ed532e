# SPDX-License-Identifier: MIT
# demo/answer: what is six times seven? The student's answer is inputdata["answer"].
answer=$(input_get answer)
echo "the student answered: $answer"
if [ "$answer" = "42" ]; then
    feedback success 100 "Correct: six times seven is 42."
else
    feedback failed 0 "Wrong answer \"$answer\": six times seven is not that."
fi
