package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

func notYet(c *gin.Context) { abortMsg(c, http.StatusNotImplemented, "Not implemented yet") }

func (s *Server) listCodes(c *gin.Context)         { notYet(c) }
func (s *Server) uploadCode(c *gin.Context)        { notYet(c) }
func (s *Server) getCode(c *gin.Context)           { notYet(c) }
func (s *Server) deleteCode(c *gin.Context)        { notYet(c) }
func (s *Server) listCodeRevisions(c *gin.Context) { notYet(c) }
func (s *Server) downloadCode(c *gin.Context)      { notYet(c) }
func (s *Server) codeStats(c *gin.Context)         { notYet(c) }
func (s *Server) pauseCode(c *gin.Context)         { notYet(c) }
func (s *Server) resumeCode(c *gin.Context)        { notYet(c) }
func (s *Server) cancelAllTasks(c *gin.Context)    { notYet(c) }
